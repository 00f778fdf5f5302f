"""The database: engines (SQLite's writer lock, PostgreSQL), compiled statements, schema
migrations, backups, and what the installation keeps about itself. Imports only drip.core.
"""
