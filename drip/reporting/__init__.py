"""What the operator reads: the funnel, the metrics, the dashboard's queries. Reads drip.core,
drip.store and drip.outbox only.
"""
