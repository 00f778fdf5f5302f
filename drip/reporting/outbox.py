"""What the outbox holds, read for people: what is due (``send-due --dry-run``), and the
lessons one person was sent (their lesson pages)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, select
from sqlmodel import col

from drip.core.models import Delivery, Enrollment, Subscriber
from drip.core.states import DeliveryStatus, EmailKind
from drip.outbox.deliveries import is_due, joined
from drip.outbox.kinds import lesson_day


def due(connection: Connection, *, now: datetime, limit: int | None) -> list[dict[str, object]]:
    """What would be sent at ``now``, without claiming anything (``--dry-run``)."""
    query = (
        joined(
            select(
                col(Enrollment.course_slug),
                col(Delivery.kind),
                col(Delivery.key),
                col(Delivery.due_at),
                col(Delivery.attempts),
                col(Subscriber.email),
            )
        )
        .where(is_due(now))
        .order_by(col(Delivery.due_at), col(Delivery.id))
        .limit(limit)
    )
    return [
        {
            "email": email,
            "course": slug,
            "kind": kind,
            "day": day_id if kind == EmailKind.LESSON else kind,
            "due_at": due_at.isoformat(),
            "attempts": attempts,
        }
        for slug, kind, day_id, due_at, attempts, email in connection.execute(query)
    ]


def sent_lessons(
    connection: Connection, *, enrollment_uid: str
) -> tuple[str, dict[str, str]] | None:
    """(course slug, day id → status of each lesson sent or being sent) of an enrollment;
    None when unknown. ``sending`` may already be in the inbox (its receipt waits for
    its window)."""
    rows = connection.execute(
        select(col(Enrollment.course_slug), col(Delivery.key), col(Delivery.status))
        .select_from(Enrollment)
        .outerjoin(
            Delivery,
            and_(
                col(Delivery.enrollment_id) == col(Enrollment.id),
                col(Delivery.kind) == EmailKind.LESSON,
                col(Delivery.status).in_([DeliveryStatus.SENT, DeliveryStatus.SENDING]),
            ),
        )
        .where(col(Enrollment.uid) == enrollment_uid)
    ).all()
    if not rows:
        return None
    received: dict[str, str] = {}
    for _, key, status in rows:  # a day sent in any run of the course
        if key is not None:
            day_id = lesson_day(key)[0]
            if received.get(day_id) != DeliveryStatus.SENT:
                received[day_id] = status
    return rows[0][0], received
