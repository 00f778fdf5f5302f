"""The outbox: every email drip sends is a Delivery row, queued, claimed with a lease and
marked sent here. Imports drip.core and drip.store.
"""
