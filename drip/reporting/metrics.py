"""``GET /metrics`` in Prometheus' text format, read from the database at each scrape.

Every process (web, ``drip run``, cron's ``send-due``) records what it does in the
database, so figures read from there are the whole installation's, whichever process
the scrape reaches. The counters are counted from the rows, plus what erased subscribers
had added (``ErasedCount``): erasing someone never makes a counter go down, which
Prometheus would read as a reset. Off unless ``DRIP_METRICS=true``; keep it off the
public internet (serve it on an internal port, or have the proxy refuse ``/metrics``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Connection, Engine, case, func, literal_column, select
from sqlmodel import col

from drip.core.models import (
    Delivery,
    Enrollment,
    ErasedCount,
    MailEvent,
    Signup,
    Subscriber,
    WebhookEndpoint,
    WebhookMessage,
)
from drip.core.states import PENDING_DELIVERY, DeliveryStatus, WebhookStatus
from drip.outbox.kinds import KINDS
from drip.store.engine import READ_ONLY
from drip.store.statements import insert_for

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
#: (counter, comma-separated label values) → count
Counts = Counter[tuple[str, str]]


def counter_values(
    connection: Connection, *, subscriber_id: int | None = None, endpoint_id: int | None = None
) -> Counts:
    """Every counter as the rows count it: the whole database's, one subscriber's share,
    or (``endpoint_id``) one webhook endpoint's share of the webhooks' counters."""
    counts = Counts()
    hooks = select(col(WebhookMessage.status), func.count()).where(
        col(WebhookMessage.status).in_([WebhookStatus.DELIVERED, WebhookStatus.FAILED])
    )
    if subscriber_id is not None:
        hooks = hooks.where(col(WebhookMessage.subscriber_id) == subscriber_id)
    if endpoint_id is not None:
        hooks = hooks.where(col(WebhookMessage.endpoint_id) == endpoint_id)
    for status, count in connection.execute(hooks.group_by(col(WebhookMessage.status))):
        name = "delivered" if status == WebhookStatus.DELIVERED else "given_up"
        counts[f"drip_webhooks_{name}", ""] = count
    if endpoint_id is not None:
        return counts
    signups = select(func.count(), func.count(col(Signup.confirmed_at)))
    # the engine writes "gave up after N attempts: …" when the attempts ran out
    # literals, not parameters: PostgreSQL matches the grouped expression to the selected one
    gave_up = col(Delivery.last_error).like(literal_column("'gave up after %'"))
    reason = case((gave_up, literal_column("'gave_up'")), else_=literal_column("'refused'"))
    sent = select(col(Delivery.kind), func.count()).where(
        col(Delivery.status) == DeliveryStatus.SENT
    )
    failed = select(col(Delivery.kind), reason, func.count()).where(
        col(Delivery.status) == DeliveryStatus.FAILED
    )
    bounces = select(col(MailEvent.kind), func.count())
    if subscriber_id is not None:
        signups = signups.where(col(Signup.subscriber_id) == subscriber_id)
        sent, failed = (
            query.join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id)).where(
                col(Enrollment.subscriber_id) == subscriber_id
            )
            for query in (sent, failed)
        )
        bounces = bounces.where(col(MailEvent.subscriber_id) == subscriber_id)
    signed_up, confirmed = connection.execute(signups).one()
    counts["drip_signups", ""] = signed_up
    counts["drip_confirmations", ""] = confirmed
    for kind, count in connection.execute(sent.group_by(col(Delivery.kind))):
        counts["drip_emails_sent", kind] = count
    for kind, why, count in connection.execute(failed.group_by(col(Delivery.kind), reason)):
        counts["drip_emails_failed", f"{kind},{why}"] = count
    for kind, count in connection.execute(bounces.group_by(col(MailEvent.kind))):
        counts["drip_bounces", kind] = count
    return counts


def record_erasure(connection: Connection, *, subscriber_id: int) -> None:
    """Before a subscriber's rows are erased: add their share of the counters to what
    erased subscribers had counted, in the caller's transaction."""
    _keep(connection, counter_values(connection, subscriber_id=subscriber_id))


def record_endpoint_removal(connection: Connection, *, endpoint_id: int) -> None:
    """Before a webhook endpoint and its messages are removed: keep their share of the
    webhooks' counters, in the caller's transaction."""
    _keep(connection, counter_values(connection, endpoint_id=endpoint_id))


def _keep(connection: Connection, counts: Counts) -> None:
    rows = [
        {"counter": counter, "labels": labels, "count": count}
        for (counter, labels), count in sorted(counts.items())
        if count
    ]
    if not rows:
        return
    statement = insert_for(connection.dialect)(ErasedCount)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["counter", "labels"],
            set_={"count": col(ErasedCount.count) + statement.excluded.count},
        ),
        rows,
    )


def _counter_totals(connection: Connection) -> Counts:
    totals = counter_values(connection)
    for counter, labels, count in connection.execute(
        select(col(ErasedCount.counter), col(ErasedCount.labels), col(ErasedCount.count))
    ):
        totals[counter, labels] += count
    return totals


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
                totals = _counter_totals(connection)
                by_status = connection.execute(
                    select(col(Subscriber.status), func.count()).group_by(col(Subscriber.status))
                ).all()
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
                waiting = connection.execute(
                    select(col(Delivery.kind), func.count(), func.min(col(Delivery.due_at)))
                    .where(col(Delivery.status).in_(PENDING_DELIVERY), col(Delivery.due_at) <= now)
                    .group_by(col(Delivery.kind))
                ).all()
        for name, (documentation, label_names) in COUNTERS.items():
            counter = CounterMetricFamily(name, documentation, labels=label_names)
            for (counter_name, labels), count in sorted(totals.items()):
                if counter_name == name:
                    counter.add_metric(labels.split(",") if label_names else [], count)
            yield counter
        subscribers = GaugeMetricFamily(
            "drip_subscribers", "Subscribers by status.", labels=["status"]
        )
        for status, count in by_status:
            subscribers.add_metric([status], count)
        yield subscribers
        depth = GaugeMetricFamily(
            "drip_queue_depth", "Emails due now and not yet sent.", labels=["kind"]
        )
        age = GaugeMetricFamily(
            "drip_oldest_due_seconds", "How long the oldest due email has waited.", labels=["kind"]
        )
        due = {kind: (count, oldest) for kind, count, oldest in waiting}
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
