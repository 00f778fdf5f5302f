"""What the teacher's dashboard (``/admin``) reads, over one connection each: the web layer
parses, calls one of these and renders. Its actions on a subscriber are the operator's
actions every door shares (``drip.lifecycle.actions``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlmodel
from sqlalchemy import Connection, select
from sqlmodel import Session, col

from drip.core.courses import Catalog
from drip.core.models import Delivery, Enrollment, MailEvent, Subscriber
from drip.core.states import DeliveryStatus
from drip.outbox.deliveries import status_is
from drip.reporting.stats import funnel_of
from drip.reporting.subscribers import (
    DeliveryView,
    by_uid,
    enrollments_of,
    history,
    mail_events,
)
from drip.store import tallies

#: most subscribers a search lists
SEARCH_LIMIT = 50
#: most failures and most bounces or complaints the overview lists
RECENT_LIMIT = 20
#: days the signups chart covers, today included
SIGNUP_DAYS = 30


@dataclass(frozen=True)
class Failure:
    """An email given up on, and why."""

    failed_at: datetime | None
    email: str
    subscriber_uid: str
    course: str
    #: a lesson's day id, or ``kind:…`` for other emails
    key: str
    error: str | None


@dataclass(frozen=True)
class Event:
    """A bounce or complaint that came back."""

    created_at: datetime
    email: str
    subscriber_uid: str
    kind: str
    source: str
    diagnostic: str


@dataclass(frozen=True)
class Overview:
    #: each course's funnel (``drip.reporting.stats.funnel``), in catalog order
    funnels: list[dict[str, Any]]
    #: (UTC day, new enrollments) for the last ``SIGNUP_DAYS`` days, oldest first
    signups: list[tuple[date, int]]
    failures: list[Failure]
    events: list[Event]


def overview(connection: Connection, *, catalog: Catalog, now: datetime) -> Overview:
    counts = tallies.totals(connection)
    return Overview(
        funnels=[funnel_of(counts, course) for course in catalog],
        signups=signups_per_day(counts, now=now),
        failures=recent_failures(connection),
        events=recent_events(connection),
    )


def signups_per_day(
    counts: tallies.Tallies, *, now: datetime, days: int = SIGNUP_DAYS
) -> list[tuple[date, int]]:
    """New enrollments per UTC day, for the ``days`` days up to ``now``'s, zeros included."""
    first = now.astimezone(UTC).date() - timedelta(days=days - 1)
    return [
        (day, counts["enrolled_on", day.isoformat()])
        for day in (first + timedelta(n) for n in range(days))
    ]


def recent_failures(connection: Connection, *, limit: int = RECENT_LIMIT) -> list[Failure]:
    """The emails most recently given up on, newest first."""
    rows = connection.execute(
        select(
            col(Delivery.failed_at),
            col(Subscriber.email),
            col(Subscriber.uid),
            col(Enrollment.course_slug),
            col(Delivery.key),
            col(Delivery.last_error),
        )
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
        .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
        .where(status_is(DeliveryStatus.FAILED))  # matches the partial index of failures
        .order_by(col(Delivery.failed_at).desc(), col(Delivery.id).desc())
        .limit(limit)
    )
    return [Failure(*row) for row in rows]


def recent_events(connection: Connection, *, limit: int = RECENT_LIMIT) -> list[Event]:
    """The bounces and complaints most recently received, newest first."""
    rows = connection.execute(
        select(
            col(MailEvent.created_at),
            col(Subscriber.email),
            col(Subscriber.uid),
            col(MailEvent.kind),
            col(MailEvent.source),
            col(MailEvent.diagnostic),
        )
        .join(Subscriber, col(Subscriber.id) == col(MailEvent.subscriber_id))
        .order_by(col(MailEvent.created_at).desc(), col(MailEvent.id).desc())
        .limit(limit)
    )
    return [Event(*row) for row in rows]


def search(connection: Connection, *, query: str, limit: int = SEARCH_LIMIT) -> list[Subscriber]:
    """Subscribers whose address contains ``query`` (any case; ``%`` and ``_`` are
    plain characters), newest first; with an empty query, the newest."""
    statement = sqlmodel.select(Subscriber).order_by(col(Subscriber.id).desc()).limit(limit)
    text = query.strip().lower()  # addresses are stored in lower case (normalize_email)
    if text:
        statement = statement.where(col(Subscriber.email).contains(text, autoescape=True))
    with Session(bind=connection) as session:
        return list(session.exec(statement))


@dataclass(frozen=True)
class Record:
    """One subscriber with everything the dashboard shows about them."""

    subscriber: Subscriber
    enrollments: list[Enrollment]
    history: list[DeliveryView]
    events: list[MailEvent]


def record(connection: Connection, uid: str) -> Record:
    with Session(bind=connection) as session:
        subscriber = by_uid(session, uid)
        return Record(
            subscriber=subscriber,
            enrollments=enrollments_of(session=session, subscriber=subscriber),
            history=history(session=session, subscriber=subscriber),
            events=mail_events(session=session, subscriber=subscriber),
        )
