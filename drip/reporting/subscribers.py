"""Reading subscribers for the operator: find one, list or export them, and what was sent to
and came back from each (``drip subscribers list|show|export``, the dashboard)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlmodel import Session, col, select

from drip.core.entries import normalize_email
from drip.core.exceptions import SubscriberNotFound
from drip.core.models import Delivery, Enrollment, MailEvent, Subscriber


def find_by_email(*, session: Session, email: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.email == email)).first()


def get_by_email(*, session: Session, email: str) -> Subscriber:
    subscriber = find_by_email(session=session, email=normalize_email(email))
    if subscriber is None:
        raise SubscriberNotFound(f"no subscriber with email {email!r}")
    return subscriber


def by_uid(session: Session, uid: str) -> Subscriber:
    subscriber = session.exec(select(Subscriber).where(col(Subscriber.uid) == uid)).first()
    if subscriber is None:
        raise SubscriberNotFound("no such subscriber (deleted, or never here)")
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
    #: a lesson's day id, or ``kind:…`` for other emails
    key: str
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
            key=d.key,
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
        session.exec(
            select(Enrollment)
            .where(Enrollment.subscriber_id == subscriber.id)
            .order_by(col(Enrollment.id))
        ).all()
    )


def mail_events(*, session: Session, subscriber: Subscriber) -> list[MailEvent]:
    """The bounces and complaints received for ``subscriber``, oldest first."""
    return list(
        session.exec(
            select(MailEvent)
            .where(MailEvent.subscriber_id == subscriber.id)
            .order_by(col(MailEvent.created_at), col(MailEvent.id))
        )
    )


def describe(*, session: Session, email: str) -> dict[str, Any]:
    """Everything about one subscriber as plain JSON-ready data (``subscribers show``):
    ``subscriber`` (``public_dict``), ``enrollments``, ``emails`` (every delivery
    receipt, oldest first) and ``events`` (bounces and complaints)."""
    subscriber = get_by_email(session=session, email=email)
    return {
        "subscriber": public_dict(subscriber),
        "enrollments": [
            {"course": item.course_slug, "status": item.status, "uid": item.uid}
            for item in enrollments_of(session=session, subscriber=subscriber)
        ],
        "emails": [
            {
                "course": view.course,
                "key": view.key,
                "status": view.status,
                "due_at": _iso(view.due_at),
                "attempts": view.attempts,
                "sent_at": _iso(view.sent_at),
                "message_id": view.message_id,
                "last_error": view.last_error,
            }
            for view in history(session=session, subscriber=subscriber)
        ],
        "events": [
            {
                "kind": event.kind,
                "source": event.source,
                "created_at": _iso(event.created_at),
                "diagnostic": event.diagnostic,
            }
            for event in mail_events(session=session, subscriber=subscriber)
        ],
    }


def api_dict(subscriber: Subscriber, enrollments: list[Enrollment]) -> dict[str, Any]:
    """The subscriber as ``/api/v1`` shows them: ``id`` is their public uid."""
    return {
        "id": subscriber.uid,
        **{k: v for k, v in public_dict(subscriber).items() if not k.startswith("consent_")},
        "consent": {
            "at": _iso(subscriber.consent_at),
            "source": subscriber.consent_source,
        },
        "enrollments": [
            {
                "course": e.course_slug,
                "status": e.status,
                "run": e.run,
                "started_at": _iso(e.started_at),
                "completed_at": _iso(e.completed_at),
                "paused_until": _iso(e.paused_until),
                "send_at": e.send_at,
            }
            for e in enrollments
        ],
    }


def api_page(
    connection: Connection,
    *,
    after: int,
    limit: int,
    email: str | None = None,
    course: str | None = None,
    status: str | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` subscribers after row id ``after``, in signup order, with the last
    one's row id when there may be more (the next page's ``after``)."""
    session = Session(bind=connection)
    query = select(Subscriber).where(col(Subscriber.id) > after).order_by(col(Subscriber.id))
    if email:
        query = query.where(Subscriber.email == normalize_email(email))
    if status:
        query = query.where(Subscriber.status == status)
    if course:
        query = query.where(
            col(Subscriber.id).in_(
                select(Enrollment.subscriber_id).where(Enrollment.course_slug == course)
            )
        )
    found = list(session.exec(query.limit(limit)).all())
    courses: dict[int, list[Enrollment]] = {}
    if found:
        for e in session.exec(
            select(Enrollment)
            .where(col(Enrollment.subscriber_id).in_([s.id for s in found]))
            .order_by(col(Enrollment.id))
        ):
            courses.setdefault(e.subscriber_id, []).append(e)
    items = [api_dict(s, courses.get(s.id or 0, [])) for s in found]
    return items, (found[-1].id if len(found) == limit else None)


def api_one(
    connection: Connection, *, uid: str | None = None, email: str | None = None
) -> dict[str, Any]:
    """One subscriber, by uid or address, as ``/api/v1`` shows them."""
    session = Session(bind=connection)
    subscriber = (
        by_uid(session, uid)
        if uid is not None
        else get_by_email(session=session, email=email or "")
    )
    return api_dict(subscriber, enrollments_of(session=session, subscriber=subscriber))
