"""The vocabulary every layer shares: settings, states, errors, tables, courses, the schedule,
tokens. Imports nothing else of drip's.
"""
