"""``GET /metrics`` in Prometheus' text format, read from the database at each scrape.

Every process (web, ``drip run``, cron's ``send-due``) records what it does in the
database, so figures read from there are the whole installation's, whichever process
the scrape reaches. The counters and the subscribers by status are tallies the database
keeps as its rows change (``drip.store.tallies``): a scrape costs the same for ten
subscribers or a million, and erasing someone never makes a counter go down (Prometheus
would read that as a reset). The queue's gauges read the due emails from their index.
Off unless ``DRIP_METRICS=true``; keep it off the public internet (serve it on an
internal port, or have the proxy refuse ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Engine, func, select
from sqlmodel import col

from drip.core.models import WebhookEndpoint, WebhookMessage
from drip.core.states import WebhookStatus
from drip.outbox import deliveries
from drip.outbox.kinds import KINDS
from drip.store import tallies
from drip.store.engine import READ_ONLY

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: counter name → (help text, label names)
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "drip_signups": ("Signups received (every form post or import row).", ()),
    "drip_confirmations": ("Signups confirmed by their owner.", ()),
    "drip_emails_sent": ("Emails accepted by the mail server.", ("kind",)),
    "drip_emails_failed": (
        "Emails given up: refused by the mail server or not sendable (reason refused), "
        "or after too many temporary failures (reason gave_up).",
        ("kind", "reason"),
    ),
    "drip_bounces": (
        "Bounces (hard, soft) and complaints received: from the SMTP conversation, "
        "inbound mail or a provider's webhook.",
        ("kind",),
    ),
    "drip_webhooks_delivered": ("Webhook messages an endpoint answered with a 2xx.", ()),
    "drip_webhooks_given_up": (
        "Webhook messages given up: three days without a 2xx, or the endpoint turned off.",
        (),
    ),
}


class _FromDatabase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        with self.engine.connect() as connection:
            connection = connection.execution_options(**{READ_ONLY: True})
            if connection.dialect.name == "postgresql":  # one snapshot, not one per statement
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():  # one snapshot for every figure (SQLite: a read in WAL)
                totals = tallies.totals(connection)
                hooks_waiting = connection.execute(
                    select(func.count()).where(
                        col(WebhookMessage.status).in_(
                            [WebhookStatus.SCHEDULED, WebhookStatus.SENDING]
                        ),
                        col(WebhookMessage.due_at) <= now,
                    )
                ).scalar_one()
                endpoints_off = connection.execute(
                    select(func.count()).where(col(WebhookEndpoint.disabled_at).is_not(None))
                ).scalar_one()
                due = deliveries.waiting(connection, now=now)
        for name, (documentation, label_names) in COUNTERS.items():
            counter = CounterMetricFamily(name, documentation, labels=label_names)
            for (counter_name, labels), count in sorted(totals.items()):
                if counter_name == name:
                    counter.add_metric(labels.split(",") if label_names else [], count)
            yield counter
        subscribers = GaugeMetricFamily(
            "drip_subscribers", "Subscribers by status.", labels=["status"]
        )
        for (name, status), count in sorted(totals.items()):
            if name == "subscribers":
                subscribers.add_metric([status], count)
        yield subscribers
        depth = GaugeMetricFamily(
            "drip_queue_depth", "Emails due now and not yet sent.", labels=["kind"]
        )
        age = GaugeMetricFamily(
            "drip_oldest_due_seconds", "How long the oldest due email has waited.", labels=["kind"]
        )
        for kind in KINDS:  # every kind, 0 when none is waiting: an empty queue is a sample
            count, oldest = due.get(kind, (0, None))
            depth.add_metric([kind], count)
            waited = (now - _aware(oldest)).total_seconds() if oldest is not None else 0.0
            age.add_metric([kind], max(0.0, waited))
        yield depth
        yield age
        yield GaugeMetricFamily(
            "drip_webhooks_waiting",
            "Webhook messages due now and not yet delivered.",
            value=hooks_waiting,
        )
        yield GaugeMetricFamily(
            "drip_webhook_endpoints_off",
            "Webhook endpoints drip turned off after three days of failures.",
            value=endpoints_off,
        )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def exposition(engine: Engine) -> bytes:
    """The metrics now, in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FromDatabase(engine))  # type: ignore[arg-type]
    return generate_latest(registry)
