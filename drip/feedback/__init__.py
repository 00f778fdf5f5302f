"""What comes back after a send: bounces, complaints, mailto unsubscribes, class clicks, and
each email provider's webhook. Imports the layers below it; never drip.web.
"""
