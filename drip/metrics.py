"""``GET /metrics`` in Prometheus' text format, read from the database at each scrape.

Every process (web, ``drip run``, cron's ``send-due``) records what it does in the
database, so figures read from there are the whole installation's, whichever process
the scrape reaches. Off unless ``DRIP_METRICS=true``; keep it off the public internet
(serve it on an internal port, or have the proxy refuse ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Engine, func, select
from sqlmodel import col

from drip.db import READ_ONLY
from drip.models import Delivery, Signup, Subscriber
from drip.states import PENDING_DELIVERY, DeliveryStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _FromDatabase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        with self.engine.connect() as connection:
            connection = connection.execution_options(**{READ_ONLY: True})
            signups, confirmed = connection.execute(
                select(func.count(), func.count(col(Signup.confirmed_at)))
            ).one()
            by_status = connection.execute(
                select(col(Subscriber.status), func.count()).group_by(col(Subscriber.status))
            ).all()
            emails = connection.execute(
                select(col(Delivery.kind), col(Delivery.status), func.count()).group_by(
                    col(Delivery.kind), col(Delivery.status)
                )
            ).all()
            waiting = connection.execute(
                select(col(Delivery.kind), func.count(), func.min(col(Delivery.due_at)))
                .where(col(Delivery.status).in_(PENDING_DELIVERY), col(Delivery.due_at) <= now)
                .group_by(col(Delivery.kind))
            ).all()
        yield _counter("drip_signups", "Signups received (every form post or import row).", signups)
        yield _counter("drip_confirmations", "Signups confirmed by their owner.", confirmed)
        subscribers = GaugeMetricFamily(
            "drip_subscribers", "Subscribers by status.", labels=["status"]
        )
        for status, count in by_status:
            subscribers.add_metric([status], count)
        yield subscribers
        sent = CounterMetricFamily(
            "drip_emails_sent", "Emails accepted by the mail server.", labels=["kind"]
        )
        failed = CounterMetricFamily(
            "drip_emails_failed",
            "Emails given up (refused, or too many attempts).",
            labels=["kind"],
        )
        for kind, status, count in emails:
            if status == DeliveryStatus.SENT:
                sent.add_metric([kind], count)
            elif status == DeliveryStatus.FAILED:
                failed.add_metric([kind], count)
        yield sent
        yield failed
        depth = GaugeMetricFamily(
            "drip_queue_depth", "Emails due now and not yet sent.", labels=["kind"]
        )
        age = GaugeMetricFamily(
            "drip_oldest_due_seconds", "How long the oldest due email has waited.", labels=["kind"]
        )
        for kind, count, oldest in waiting:
            depth.add_metric([kind], count)
            age.add_metric([kind], max(0.0, (now - _aware(oldest)).total_seconds()))
        yield depth
        yield age


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    metric = CounterMetricFamily(name, documentation)
    metric.add_metric([], value)
    return metric


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def exposition(engine: Engine) -> bytes:
    """The metrics now, in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FromDatabase(engine))  # type: ignore[arg-type]
    return generate_latest(registry)
