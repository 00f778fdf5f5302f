"""The operator's webhook endpoints: add one (its URL and event types checked, its secret
made), remove one, give it a new secret, turn it back on. The CLI calls these; posting is
``drip.sending.webhooks``, the messages' outbox ``drip.outbox.webhooks``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, update
from sqlmodel import col

from drip.core.models import WebhookEndpoint
from drip.core.webhooks import check_url, new_secret, read_event_types
from drip.outbox.webhooks import endpoint

#: how long the old secret signs beside the new one after a rotation
ROTATION_OVERLAP = timedelta(hours=24)


def add_endpoint(
    connection: Connection, *, url: str, events: str | None, description: str, now: datetime
) -> WebhookEndpoint:
    """A new endpoint (its URL checked, its event types known); its secret is in the
    returned row, to be shown once."""
    row: dict[str, Any] = {
        "url": check_url(url),
        "events": read_event_types(events),
        "description": " ".join(description.split())[:500],
        "secret": new_secret(),
        "created_at": now,
    }
    endpoint_id = connection.execute(insert(WebhookEndpoint).values(**row)).inserted_primary_key
    assert endpoint_id is not None
    return WebhookEndpoint(id=endpoint_id[0], **row)


def remove_endpoint(connection: Connection, endpoint_id: int) -> None:
    """Remove an endpoint with every message for it, delivered or waiting (the metrics'
    counters keep what they counted)."""
    endpoint(connection, endpoint_id)
    connection.execute(delete(WebhookEndpoint).where(col(WebhookEndpoint.id) == endpoint_id))


def rotate_secret(connection: Connection, endpoint_id: int, *, now: datetime) -> str:
    """A new secret for the endpoint; the old one keeps signing beside it for
    ``ROTATION_OVERLAP``, so the receiver can switch without losing a message."""
    old = endpoint(connection, endpoint_id)
    secret = new_secret()
    connection.execute(
        update(WebhookEndpoint)
        .where(col(WebhookEndpoint.id) == endpoint_id)
        .values(secret=secret, previous_secret=old.secret, previous_until=now + ROTATION_OVERLAP)
    )
    return secret


def enable_endpoint(connection: Connection, endpoint_id: int) -> bool:
    """Turn an endpoint that was turned off back on (events from now on reach it); False
    when it was on."""
    found = endpoint(connection, endpoint_id)
    if found.disabled_at is None:
        return False
    connection.execute(
        update(WebhookEndpoint)
        .where(col(WebhookEndpoint.id) == endpoint_id)
        .values(disabled_at=None, disabled_reason=None, failing_since=None)
    )
    return True


__all__ = ["add_endpoint", "enable_endpoint", "endpoint", "remove_endpoint", "rotate_secret"]
