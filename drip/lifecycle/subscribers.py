"""Subscriber input rules and the operator's subscriber commands (list, export, delete …)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, col, select

from drip.core.courses import is_timezone
from drip.core.exceptions import InvalidSubscriber, SubscriberNotFound
from drip.core.models import Delivery, Enrollment, MailEvent, Subscriber

MAX_NAME = 100


def normalize_email(raw: str) -> str:
    """The canonical form of an address, lower-cased so one person is one subscriber.

    Local parts are case-sensitive in theory, never in practice; no DNS look-up is made.
    """
    raw = (raw or "").strip()
    if not raw:
        raise InvalidSubscriber("email is required", field="email")
    if len(raw) > 320 or any(ch in raw for ch in "\r\n\0"):
        raise InvalidSubscriber("email is not a valid address", field="email")
    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise InvalidSubscriber(f"email is not a valid address: {error}", field="email") from None
    return result.normalized.lower()


def clean_name(raw: str | None) -> str:
    """A display name safe for headers and pages: no control characters, bounded length."""
    if not raw:
        return ""
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in raw)
    return " ".join(text.split())[:MAX_NAME]


def clean_timezone(raw: str | None) -> str | None:
    """An IANA zone name, or None when missing or unknown (the course default applies)."""
    raw = (raw or "").strip()
    return raw if raw and len(raw) <= 64 and is_timezone(raw) else None


def find_by_email(*, session: Session, email: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.email == email)).first()


def get_by_email(*, session: Session, email: str) -> Subscriber:
    subscriber = find_by_email(session=session, email=normalize_email(email))
    if subscriber is None:
        raise SubscriberNotFound(f"no subscriber with email {email!r}")
    return subscriber


def iter_subscribers(
    *, session: Session, status: str | None = None, course: str | None = None
) -> Iterator[Subscriber]:
    """Subscribers in signup order, streamed (never all loaded at once)."""
    query = select(Subscriber).order_by(col(Subscriber.id))
    if status:
        query = query.where(Subscriber.status == status)
    if course:
        query = query.where(
            col(Subscriber.id).in_(
                select(Enrollment.subscriber_id).where(Enrollment.course_slug == course)
            )
        )
    yield from session.exec(query.execution_options(yield_per=500))


@dataclass(frozen=True)
class DeliveryView:
    course: str
    day_id: str
    status: str
    due_at: datetime
    attempts: int
    sent_at: datetime | None
    message_id: str | None
    last_error: str | None


def public_dict(subscriber: Subscriber) -> dict[str, Any]:
    """The subscriber as plain JSON-ready data (``list --json`` and ``export``)."""
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "timezone": subscriber.timezone,
        "status": subscriber.status,
        "created_at": _iso(subscriber.created_at),
        "confirmed_at": _iso(subscriber.confirmed_at),
        "unsubscribed_at": _iso(subscriber.unsubscribed_at),
        "suppressed_at": _iso(subscriber.suppressed_at),
        "suppressed_reason": subscriber.suppressed_reason,
        "consent_at": _iso(subscriber.consent_at),
        "consent_ip": subscriber.consent_ip,
        "consent_user_agent": subscriber.consent_user_agent,
        "consent_source": subscriber.consent_source,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def history(*, session: Session, subscriber: Subscriber) -> list[DeliveryView]:
    rows = session.exec(
        select(Enrollment.course_slug, Delivery)
        .join(Delivery, col(Delivery.enrollment_id) == Enrollment.id)
        .where(Enrollment.subscriber_id == subscriber.id)
        .order_by(col(Delivery.id))
    ).all()
    return [
        DeliveryView(
            course=slug,
            day_id=d.day_id,
            status=d.status,
            due_at=d.due_at,
            attempts=d.attempts,
            sent_at=d.sent_at,
            message_id=d.message_id,
            last_error=d.last_error,
        )
        for slug, d in rows
    ]


def enrollments_of(*, session: Session, subscriber: Subscriber) -> list[Enrollment]:
    return list(
        session.exec(select(Enrollment).where(Enrollment.subscriber_id == subscriber.id)).all()
    )


def delete_subscriber(*, session: Session, subscriber: Subscriber) -> None:
    """Erase a subscriber with their enrollments, delivery receipts and (by the foreign
    keys' cascade) clicks: the right to erasure."""
    from drip.reporting.metrics import record_erasure

    connection = session.connection()
    # Hold the subscriber and their emails (PostgreSQL; SQLite has one writer at a time):
    # an erasure of the same subscriber at the same moment waits and then finds nobody,
    # and no bounce, signup or receipt of theirs lands between the count and the delete.
    held = connection.execute(
        select(Subscriber.id).where(Subscriber.id == subscriber.id).with_for_update()
    ).first()
    if held is None:
        return  # erased meanwhile
    enrollments = enrollments_of(session=session, subscriber=subscriber)
    deliveries = session.exec(
        select(Delivery)
        .where(col(Delivery.enrollment_id).in_([e.id for e in enrollments]))
        .order_by(col(Delivery.id))
        .with_for_update()
    ).all()
    record_erasure(connection, subscriber_id=held.id)  # the counters never go down
    for row in (*deliveries, *enrollments, subscriber):
        session.delete(row)


def mail_events(*, session: Session, subscriber: Subscriber) -> list[MailEvent]:
    """The bounces and complaints received for ``subscriber``, oldest first."""
    return list(
        session.exec(
            select(MailEvent)
            .where(MailEvent.subscriber_id == subscriber.id)
            .order_by(col(MailEvent.created_at), col(MailEvent.id))
        )
    )
