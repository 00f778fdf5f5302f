"""The web side: signup webhook, confirmation and unsubscribe pages."""

from drip.web.app import create_app

__all__ = ["create_app"]
