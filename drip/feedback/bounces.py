"""What comes back after a send: bounces and complaints, and the policy that acts on them.

Return addresses (``Tokens.return_address``): with
``DRIP_BOUNCE_ADDRESS=bounces@mail.example.com`` every email's envelope sender is
``bounces+b-UID-TAG@mail.example.com`` (VERP), UID the enrollment's and TAG an HMAC of it,
so a bounce names its subscriber and cannot be forged for anyone else; List-Unsubscribe's
mailto is ``bounces+u-UID-TAG@…``, which unsubscribes (``drip.feedback.inbound`` reads both).

The policy (``record``): a hard bounce suppresses the address at once; soft bounces
(mailbox full, greylisting given up) suppress it once ``DRIP_SOFT_BOUNCE_LIMIT`` emails
(default 3) soft-bounced within ``DRIP_SOFT_BOUNCE_DAYS`` (default 14), an email reported
twice counting once; a complaint ("this is spam") unsubscribes and suppresses at once,
without a goodbye. Every event is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, distinct, func, insert, select
from sqlmodel import col

from drip.core.config import BouncePolicy
from drip.core.models import Delivery, Enrollment, MailEvent, Subscriber, WebhookEvent
from drip.core.states import (
    DeliveryStatus,
    EmailKind,
    EventType,
    MailEventKind,
    SubscriberStatus,
)
from drip.feedback.providers.base import Report
from drip.lifecycle.enrollment import stop_subscriber
from drip.outbox import webhooks
from drip.store.statements import insert_new

#: the kinds whose keys are ``kind:uid`` (written ``kind.uid`` in a Message-ID)
OTHER_KINDS = frozenset(kind.value for kind in EmailKind if kind != EmailKind.LESSON)


def delivery_of(connection: Connection, message_id: str | None, subscriber_id: int) -> int | None:
    """The delivery row whose Message-ID (``UID.KEY@domain``) is ``message_id``, when it was
    sent to ``subscriber_id``."""
    local = (message_id or "").strip().strip("<>").partition("@")[0]
    uid, _, key = local.partition(".")
    if not uid.isalnum() or not key:
        return None
    kind, dot, rest = key.partition(".")  # others' keys are kind:uid; a lesson's DAY[.RUN]
    if kind not in OTHER_KINDS:
        dot = ""
    return connection.execute(
        select(col(Delivery.id))
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
        .where(
            col(Enrollment.uid) == uid,
            col(Enrollment.subscriber_id) == subscriber_id,
            col(Delivery.key) == (f"{kind}:{rest}" if dot else key),
        )
    ).scalar()


def first_time(connection: Connection, *, provider: str, event_id: str, now: datetime) -> bool:
    """Note a provider's event as handled; False when it already was."""
    return insert_new(
        connection,
        WebhookEvent,
        {"provider": provider, "event_id": str(event_id)[:255], "received_at": now},
        unique=["provider", "event_id"],
    )


def apply_reports(
    connection: Connection,
    *,
    reports: Sequence[Report],
    source: str,
    policy: BouncePolicy,
    now: datetime,
    replay_key: str | None = None,
) -> int:
    """Record each of a provider's reports for its address, unless its event was handled
    before (a retry or a replay); how many were recorded. A request whose one-time proof
    (``replay_key``) was seen before records nothing."""
    if replay_key is not None and not first_time(
        connection, provider=f"{source}:proof", event_id=replay_key, now=now
    ):
        return 0
    handled = 0
    for report in reports:
        if report.event_id is not None and not first_time(
            connection, provider=source, event_id=report.event_id, now=now
        ):
            continue
        outcome = record_for_address(
            connection,
            email=report.email,
            kind=report.kind,
            source=source,
            diagnostic=report.diagnostic,
            message_id=report.message_id,
            now=now,
            policy=policy,
        )
        handled += outcome is not None
    return handled


def record_for_address(
    connection: Connection,
    *,
    email: str,
    kind: MailEventKind,
    source: str,
    diagnostic: str,
    now: datetime,
    policy: BouncePolicy,
    message_id: str | None = None,
) -> str | None:
    """``record`` for the subscriber with this address (a provider's report names only
    that); None when there is none."""
    address = email.replace("\x00", "").strip().lower()  # PostgreSQL text holds no NUL
    subscriber_id = connection.execute(
        select(col(Subscriber.id)).where(col(Subscriber.email) == address)
    ).scalar()
    if subscriber_id is None:
        return None
    return record(
        connection,
        subscriber_id=subscriber_id,
        kind=kind,
        source=source,
        diagnostic=diagnostic,
        now=now,
        policy=policy,
        delivery_id=delivery_of(connection, message_id, subscriber_id),
    )


def record(
    connection: Connection,
    *,
    subscriber_id: int,
    kind: MailEventKind,
    source: str,
    diagnostic: str,
    now: datetime,
    policy: BouncePolicy,
    delivery_id: int | None = None,
) -> str:
    """Store the event and apply the policy; returns what it did: ``suppressed``, or
    ``noted`` (a soft bounce under the limit). An event that names no email is put down
    to the last one sent to the subscriber."""
    if delivery_id is None:
        delivery_id = connection.execute(
            select(col(Delivery.id))
            .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
            .where(
                col(Enrollment.subscriber_id) == subscriber_id,
                col(Delivery.status) == DeliveryStatus.SENT,
                col(Delivery.sent_at) <= now,
            )
            .order_by(col(Delivery.sent_at).desc(), col(Delivery.id).desc())
            .limit(1)
        ).scalar()
    connection.execute(
        insert(MailEvent).values(
            subscriber_id=subscriber_id,
            delivery_id=delivery_id,
            kind=kind,
            source=source,
            diagnostic=diagnostic.replace("\x00", "")[:2000],
            created_at=now,
        )
    )
    report = {"kind": kind.value, "source": source, "diagnostic": diagnostic[:2000]}
    if kind == MailEventKind.COMPLAINT:
        webhooks.emit(
            connection,
            EventType.SUBSCRIBER_COMPLAINED,
            subscriber_id=subscriber_id,
            now=now,
            complaint=report,
        )
    else:
        webhooks.emit(
            connection,
            EventType.SUBSCRIBER_BOUNCED,
            subscriber_id=subscriber_id,
            now=now,
            bounce=report,
        )
    if kind == MailEventKind.SOFT:
        # emails that soft-bounced, each once however often it was reported
        emails = func.coalesce(col(MailEvent.delivery_id), -col(MailEvent.id))
        recent = connection.execute(
            select(func.count(distinct(emails))).where(
                col(MailEvent.subscriber_id) == subscriber_id,
                col(MailEvent.kind) == MailEventKind.SOFT,
                col(MailEvent.created_at) > now - timedelta(days=policy.soft_days),
            )
        ).scalar_one()
        if recent < policy.soft_limit:
            return "noted"
        reason = f"{recent} soft bounces in {policy.soft_days} days ({source}): {diagnostic}"
    elif kind == MailEventKind.COMPLAINT:
        stop_subscriber(
            connection, subscriber_id=subscriber_id, status=SubscriberStatus.UNSUBSCRIBED, now=now
        )
        reason = f"complaint ({source})"
    else:
        reason = f"hard bounce ({source}): {diagnostic}"
    stop_subscriber(
        connection,
        subscriber_id=subscriber_id,
        status=SubscriberStatus.SUPPRESSED,
        now=now,
        reason=reason.replace("\x00", "")[:2000],
    )
    return "suppressed"
