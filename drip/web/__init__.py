"""The web side: signup webhook, confirmation and unsubscribe pages.

``create_app`` is imported on first use, so importing ``drip.lifecycle.forms`` (the CLI's
``form-snippet``) does not load FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drip.web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from drip.web.app import create_app

        return create_app
    raise AttributeError(name)
