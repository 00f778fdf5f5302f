"""The send engine: claims due emails from the outbox, composes them, hands them to a mailer,
records the receipts. Imports drip.core, drip.store and drip.outbox; never drip.lifecycle.
"""
