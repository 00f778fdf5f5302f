"""Class clicks: a lesson's class link goes through ``GET /c/{token}``, which notes the
first time each lesson's link was followed and redirects to the class.

Only the delivery, the link and the time are stored: no IP address, no user agent, no
open pixel. A mail-security scanner that follows every link counts as a click too; no
server can tell it from a person without tracking the person.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, or_, select
from sqlmodel import col

from drip.core.models import Click, Delivery, Enrollment
from drip.core.states import DeliveryStatus, EmailKind, EventType
from drip.outbox import webhooks
from drip.store.statements import insert_new


def record_click(
    connection: Connection,
    *,
    enrollment_uid: str,
    day_id: str,
    link: str,
    now: datetime,
    day_number: int | None = None,
) -> bool:
    """Note that ``link`` of the lesson ``day_id`` (the ``day_number``-th of its course,
    when known) sent to ``enrollment_uid`` was followed, unless it already was; True when
    this was the first time, told to the webhooks as ``lesson.clicked``. A lesson not sent
    (or no longer there: the subscriber was erased) records nothing."""
    found = connection.execute(
        select(col(Delivery.id), col(Delivery.enrollment_id))
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
        .where(
            col(Enrollment.uid) == enrollment_uid,
            # the day's lesson in any run of the course (``DAY``, ``DAY.2`` …): the latest
            or_(col(Delivery.key) == day_id, col(Delivery.key).startswith(f"{day_id}.")),
            col(Delivery.kind) == EmailKind.LESSON,
            # a lesson received: sent, or being sent (its receipt waits for its window)
            col(Delivery.status).in_([DeliveryStatus.SENT, DeliveryStatus.SENDING]),
        )
        .order_by(col(Delivery.id).desc())
        .limit(1)
    ).one_or_none()
    if found is None:
        return False
    delivery_id, enrollment_id = found
    first = insert_new(
        connection,
        Click,
        {"delivery_id": delivery_id, "link": link, "clicked_at": now},
        unique=["delivery_id", "link"],
    )
    if first:
        webhooks.emit(
            connection,
            EventType.LESSON_CLICKED,
            enrollment_id=enrollment_id,
            now=now,
            day={"id": day_id, "number": day_number},
            link=link,
        )
    return first
