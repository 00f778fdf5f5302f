"""The webhook endpoints as the CLI and the dashboard show them: each with how its
messages stand, and the latest messages given up."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlmodel import col

from drip.core.models import WebhookEndpoint, WebhookMessage
from drip.core.states import WebhookStatus
from drip.outbox.webhooks import endpoints


@dataclass(frozen=True)
class EndpointView:
    endpoint: WebhookEndpoint
    #: messages by status: scheduled, sending, delivered, failed
    messages: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        e = self.endpoint
        return {
            "id": e.id,
            "url": e.url,
            "description": e.description,
            "events": e.events.split(",") if e.events else ["*"],
            "enabled": e.disabled_at is None,
            "disabled_at": _iso(e.disabled_at),
            "disabled_reason": e.disabled_reason,
            "failing_since": _iso(e.failing_since),
            "last_success_at": _iso(e.last_success_at),
            "rotating_until": _iso(e.previous_until) if e.previous_secret else None,
            "created_at": _iso(e.created_at),
            "messages": {status.value: self.messages.get(status, 0) for status in WebhookStatus},
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def endpoint_views(connection: Connection) -> list[EndpointView]:
    counts: Counter[tuple[int, str]] = Counter()
    for endpoint_id, status, count in connection.execute(
        select(col(WebhookMessage.endpoint_id), col(WebhookMessage.status), func.count()).group_by(
            col(WebhookMessage.endpoint_id), col(WebhookMessage.status)
        )
    ):
        counts[endpoint_id, status] = count
    return [
        EndpointView(e, {s: counts[e.id or 0, s] for s in WebhookStatus if counts[e.id or 0, s]})
        for e in endpoints(connection)
    ]


@dataclass(frozen=True)
class GivenUp:
    endpoint_id: int
    url: str
    event_id: str
    type: str
    failed_at: datetime | None
    attempts: int
    last_error: str | None


def given_up(connection: Connection, *, limit: int = 20) -> list[GivenUp]:
    """The latest messages given up on, newest first."""
    rows = connection.execute(
        select(
            col(WebhookMessage.endpoint_id),
            col(WebhookEndpoint.url),
            col(WebhookMessage.event_id),
            col(WebhookMessage.type),
            col(WebhookMessage.failed_at),
            col(WebhookMessage.attempts),
            col(WebhookMessage.last_error),
        )
        .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(WebhookMessage.endpoint_id))
        .where(col(WebhookMessage.status) == WebhookStatus.FAILED)
        .order_by(col(WebhookMessage.failed_at).desc(), col(WebhookMessage.id).desc())
        .limit(limit)
    ).all()
    return [GivenUp(*row) for row in rows]
