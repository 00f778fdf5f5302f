"""Tables: Subscriber, Signup (one form post: details and proof of consent), Enrollment
(a subscriber on a course), Delivery (one email), Click (a lesson's class link followed),
MailEvent (a bounce or complaint), WebhookEvent (a provider's event already handled),
Tally and TallyChange (counts kept by triggers: ``drip.store.tallies``),
WebhookEndpoint and WebhookMessage (events drip posts out: one row per event and
endpoint, the webhooks' outbox) and ApiKey (who may use ``/api/v1``).

The Delivery row is the outbox: every email drip sends (lesson, confirmation, welcome,
goodbye) is one row, unique per (enrollment, key), carrying one status, one timestamp
per event, the attempts, the SMTP response and the Message-ID: queue and receipt at once.
All datetimes are aware UTC.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TextClause,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from drip.core.states import (
    DeliveryStatus,
    EmailKind,
    EnrollmentStatus,
    SubscriberStatus,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always reads them back aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uid() -> str:
    """A public identifier, used in tokens and Message-IDs instead of row ids."""
    return new_uids(1)[0]


def new_uids(count: int) -> list[str]:
    """``count`` uids: the time in milliseconds (10 hex digits, wrapping every 35 years),
    then 56 random bits, from one read of the system's random source.

    Time first, as in UUIDv7: the rows written together sit side by side in each uid
    index, so a transaction of a thousand signups changes a few index pages instead of a
    thousand scattered ones (SQLite writes every changed page at commit). Nothing is
    granted by knowing a uid: every link carries a signature over it.
    """
    prefix = f"{time.time_ns() // 1_000_000 % 16**10:010x}"
    text = secrets.token_hex(RANDOM_BYTES * count)
    width = 2 * RANDOM_BYTES
    return [prefix + text[i : i + width] for i in range(0, len(text), width)]


#: the random part of a uid (24 hex digits in all, with the time)
RANDOM_BYTES = 7


def _ts(*, index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(UTCDateTime(), nullable=True, index=index)


def partial_index(name: str, *columns: str, where: TextClause) -> Index:
    """An index of the rows ``where`` holds, on both databases. Only SQLite's option is
    named: naming PostgreSQL's would load that dialect at every command's start, some 4 %
    of an idle ``send-due`` on SQLite. The migrations create each with its condition on
    both, and ``tests/store/test_db.py`` holds both databases' conditions to
    ``index.info``."""
    return Index(name, *columns, sqlite_where=where, info={"where": where})


#: the partial index's condition, spelled once: pending emails that are not lessons
TRANSACTIONAL_PENDING = text("kind != 'lesson' AND status IN ('scheduled', 'sending')")
#: the two sets of rows a claim reads: emails waiting for their time, and claims in flight
#: (taken over once their lease runs out)
SCHEDULED = text("status = 'scheduled'")
SENDING = text("status = 'sending'")
#: emails given up on: few, listed newest first on the dashboard
FAILED = text("status = 'failed'")
#: deliveries that belong to a signup (confirmation, welcome): lessons have none
HAS_SIGNUP = text("signup_id IS NOT NULL")
#: signups the web process stored and nobody has processed yet
UNPROCESSED = text("processed_at IS NULL")


class Subscriber(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(default_factory=new_uid, sa_column=Column(String(32), unique=True))
    email: str = Field(sa_column=Column(String(320), unique=True, nullable=False))
    name: str = Field(default="", sa_column=Column(String(200), nullable=False))
    timezone: str | None = Field(default=None, sa_column=Column(String(64)))
    status: str = Field(
        default=SubscriberStatus.PENDING, sa_column=Column(String(16), nullable=False)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    confirmed_at: datetime | None = Field(default=None, sa_column=_ts())
    unsubscribed_at: datetime | None = Field(default=None, sa_column=_ts())
    suppressed_at: datetime | None = Field(default=None, sa_column=_ts())
    suppressed_reason: str | None = Field(default=None, sa_column=Column(Text))
    #: when the last confirmation email was queued (resends are spaced out from it)
    confirmation_sent_at: datetime | None = Field(default=None, sa_column=_ts())
    # Proof of the consent in force: the confirmed signup's (or the operator's import).
    # A later unconfirmed signup never overwrites it; it waits in its own Signup row.
    consent_at: datetime | None = Field(default=None, sa_column=_ts())
    consent_ip: str | None = Field(default=None, sa_column=Column(String(64)))
    consent_user_agent: str | None = Field(default=None, sa_column=Column(String(512)))
    consent_source: str | None = Field(default=None, sa_column=Column(String(512)))


class Setting(SQLModel, table=True):
    """A value the installation keeps about itself (the signing key's fingerprint)."""

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    value: str = Field(sa_column=Column(Text, nullable=False))


class Signup(SQLModel, table=True):
    """One signup as it was posted: the details given and where they came from.

    The web process only stores this row (the same small insert whatever the address's
    state) and answers; processing it (``drip.lifecycle.signup.process_recorded``) creates
    or finds the subscriber and queues the confirmation. A confirmation link names its signup, and
    confirming applies that signup's name and time zone and makes it the subscriber's
    proof of consent, so a stranger posting the form again changes nothing its owner
    has not confirmed.
    """

    __table_args__ = (partial_index("ix_signup_unprocessed", "id", where=UNPROCESSED),)

    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(default_factory=new_uid, sa_column=Column(String(32), unique=True))
    #: the normalised address as posted
    email: str = Field(sa_column=Column(String(320), nullable=False))
    course_slug: str = Field(sa_column=Column(String(100), nullable=False))
    name: str = Field(default="", sa_column=Column(String(200), nullable=False))
    timezone: str | None = Field(default=None, sa_column=Column(String(64)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    ip: str | None = Field(default=None, sa_column=Column(String(64)))
    user_agent: str | None = Field(default=None, sa_column=Column(String(512)))
    source: str | None = Field(default=None, sa_column=Column(String(512)))
    #: set when processed; None while it waits in the web process's inbox
    subscriber_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), index=True),
    )
    processed_at: datetime | None = Field(default=None, sa_column=_ts())
    confirmed_at: datetime | None = Field(default=None, sa_column=_ts())


class Enrollment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("subscriber_id", "course_slug"),)

    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(default_factory=new_uid, sa_column=Column(String(32), unique=True))
    subscriber_id: int = Field(
        sa_column=Column(Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False)
    )  # looked up through the unique (subscriber_id, course_slug) index
    course_slug: str = Field(sa_column=Column(String(100), nullable=False, index=True))
    status: str = Field(
        default=EnrollmentStatus.PENDING, sa_column=Column(String(16), nullable=False)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    started_at: datetime | None = Field(default=None, sa_column=_ts())
    completed_at: datetime | None = Field(default=None, sa_column=_ts())
    cancelled_at: datetime | None = Field(default=None, sa_column=_ts())
    #: which run of the course: 1, then one more for each restart (a lesson's row key
    #: carries it from the second run on: ``drip.outbox.kinds.lesson_key``)
    run: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    #: no lesson before this time (a pause the subscriber asked for)
    paused_until: datetime | None = Field(default=None, sa_column=_ts())
    #: the subscriber's own local hour for lessons (``HH:MM``), instead of the course's
    send_at: str | None = Field(default=None, sa_column=Column(String(5)))
    #: how many times the subscriber paused, and restarted, the course
    pauses: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    restarts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    #: when the subscriber unsubscribed: the outbox key of the last lesson they had
    #: (sent, or going out), for the funnel's "left after day N"
    left_after: str | None = Field(default=None, sa_column=Column(String(100)))


class Delivery(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("enrollment_id", "key", name="uq_delivery_enrollment_day"),
        # The claim reads scheduled rows, then claims in flight. Partial indexes: a claim
        # walks only the scheduled rows it takes, and a sent row (nearly all of them, in
        # time) is in neither, so recording a send updates two indexes, not five. Claims in
        # flight (batches × connections) are keyed by id: a plan that reaches for this index
        # for a statement naming its rows probes them instead of walking all of them.
        partial_index("ix_delivery_scheduled", "due_at", "id", where=SCHEDULED),
        partial_index("ix_delivery_sending", "id", where=SENDING),
        # the dashboard's latest failures: read from a small index, not the whole outbox
        partial_index("ix_delivery_failed", "failed_at", "id", where=FAILED),
        partial_index("ix_delivery_signup_id", "signup_id", where=HAS_SIGNUP),
        # The web process's prompt sender looks only for pending non-lessons: a small index
        # however many lessons are queued.
        partial_index("ix_delivery_transactional", "due_at", where=TRANSACTIONAL_PENDING),
    )

    id: int | None = Field(default=None, primary_key=True)
    enrollment_id: int = Field(
        sa_column=Column(Integer, ForeignKey("enrollment.id", ondelete="CASCADE"), nullable=False)
    )  # looked up through the unique (enrollment_id, key) index
    #: which email of the enrollment it is (``drip.outbox.kinds.row_key``): a lesson's day
    #: id, else ``kind:…`` (day ids never contain a colon)
    key: str = Field(sa_column=Column(String(100), nullable=False))
    kind: str = Field(
        default=EmailKind.LESSON,
        sa_column=Column(String(16), nullable=False, server_default=EmailKind.LESSON.value),
    )
    #: the signup a confirmation or welcome email belongs to
    signup_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("signup.id", ondelete="CASCADE")),
    )
    status: str = Field(
        default=DeliveryStatus.SCHEDULED, sa_column=Column(String(16), nullable=False)
    )
    due_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    claimed_until: datetime | None = Field(default=None, sa_column=_ts())
    sent_at: datetime | None = Field(default=None, sa_column=_ts())
    failed_at: datetime | None = Field(default=None, sa_column=_ts())
    cancelled_at: datetime | None = Field(default=None, sa_column=_ts())
    message_id: str | None = Field(default=None, sa_column=Column(String(255)))
    smtp_response: str | None = Field(default=None, sa_column=Column(Text))
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class Click(SQLModel, table=True):
    """The first time a lesson's link was followed: which delivery, which link, when.
    Nothing about the person's device or network (no IP, no user agent)."""

    __table_args__ = (UniqueConstraint("delivery_id", "link", name="uq_click_delivery_link"),)

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(
        sa_column=Column(Integer, ForeignKey("delivery.id", ondelete="CASCADE"), nullable=False)
    )
    #: which link of the lesson: ``class`` (the day's class)
    link: str = Field(sa_column=Column(String(32), nullable=False))
    clicked_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class MailEvent(SQLModel, table=True):
    """What came back after a send: a bounce (hard or soft) or a complaint, from the SMTP
    conversation, an inbound email or a provider's webhook; kept for the record and
    counted by the bounce policy (``drip.feedback.bounces``)."""

    #: the dashboard's latest bounces and complaints, read from the index's end
    __table_args__ = (Index("ix_mailevent_created_at", "created_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    #: the email it is about, when known (indexed: the funnel and its tallies look an
    #: email's bounces up)
    delivery_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("delivery.id", ondelete="SET NULL"), index=True),
    )
    #: ``hard``, ``soft`` or ``complaint``
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    #: where it came from: ``smtp``, ``inbound``, or the provider's name
    source: str = Field(sa_column=Column(String(32), nullable=False))
    diagnostic: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class Tally(SQLModel, table=True):
    """One count the database keeps as its rows change (``drip.store.tallies``): the
    metrics' counters, subscribers by status, each course's funnel. Holds no personal
    data."""

    #: the count's name, e.g. ``drip_emails_sent``, ``lessons``
    name: str = Field(sa_column=Column(String(64), primary_key=True))
    #: its label values, comma-separated (``lesson``; ``yin,day-1,sent``), or ``""``
    labels: str = Field(sa_column=Column(String(400), primary_key=True))
    n: int = Field(sa_column=Column(Integer, nullable=False))


class TallyChange(SQLModel, table=True):
    """PostgreSQL: a change to a ``Tally``, appended by a trigger and folded into it
    later (concurrent writers never wait on one another's counts). Empty on SQLite."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(64), nullable=False))
    labels: str = Field(sa_column=Column(String(400), nullable=False))
    n: int = Field(sa_column=Column(Integer, nullable=False))


class WebhookEvent(SQLModel, table=True):
    """A provider's event already handled (its own id): a retry or replay of it changes
    nothing. Holds no personal data."""

    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_webhookevent_provider_event"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(sa_column=Column(String(32), nullable=False))
    event_id: str = Field(sa_column=Column(String(255), nullable=False))
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


#: webhook messages waiting for their time, and claims in flight
WEBHOOK_PENDING = text("status IN ('scheduled', 'sending')")


class WebhookEndpoint(SQLModel, table=True):
    """A URL drip posts events to, signed with its secret (Standard Webhooks)."""

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(sa_column=Column(String(2048), nullable=False))
    description: str = Field(default="", sa_column=Column(String(500), nullable=False))
    #: the event types it gets, comma-separated; empty: every type
    events: str = Field(default="", sa_column=Column(Text, nullable=False))
    #: ``whsec_`` + base64 of the key (the receiver's copy is the same string)
    secret: str = Field(sa_column=Column(String(100), nullable=False))
    #: after a rotation, the old secret, still signing beside the new one until
    #: ``previous_until``
    previous_secret: str | None = Field(default=None, sa_column=Column(String(100)))
    previous_until: datetime | None = Field(default=None, sa_column=_ts())
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    #: the first failure since the last success: failing for 3 days turns it off
    failing_since: datetime | None = Field(default=None, sa_column=_ts())
    last_success_at: datetime | None = Field(default=None, sa_column=_ts())
    disabled_at: datetime | None = Field(default=None, sa_column=_ts())
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text))


class WebhookMessage(SQLModel, table=True):
    """One event for one endpoint: the webhooks' outbox, claimed with a lease as emails
    are. ``event_id`` is the ``webhook-id`` header, the same on every retry."""

    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhookmessage_event_endpoint"),
        partial_index("ix_webhookmessage_pending", "due_at", "id", where=WEBHOOK_PENDING),
        Index("ix_webhookmessage_endpoint", "endpoint_id", "id"),
        Index("ix_webhookmessage_subscriber", "subscriber_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(sa_column=Column(String(64), nullable=False))
    endpoint_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("webhookendpoint.id", ondelete="CASCADE"), nullable=False
        )
    )
    #: who the event is about: erasing them erases it too (its body names them)
    subscriber_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("subscriber.id", ondelete="CASCADE")),
    )
    type: str = Field(sa_column=Column(String(64), nullable=False))
    #: the request body, exactly as signed and sent
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    due_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    claimed_until: datetime | None = Field(default=None, sa_column=_ts())
    delivered_at: datetime | None = Field(default=None, sa_column=_ts())
    failed_at: datetime | None = Field(default=None, sa_column=_ts())
    #: the last attempt's HTTP status (none when there was no answer)
    last_status: int | None = Field(default=None, sa_column=Column(Integer))
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class ApiKey(SQLModel, table=True):
    """A key for ``/api/v1``: only its SHA-256 is kept (the key itself is shown once)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(100), unique=True, nullable=False))
    key_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    read_only: bool = Field(default=False)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_used_at: datetime | None = Field(default=None, sa_column=_ts())
