"""A subscriber's life: signing up, confirming, enrolment, leaving, and the operator's actions
on them. Imports drip.core, drip.store, drip.outbox and drip.reporting; never drip.sending.
"""
