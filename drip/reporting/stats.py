"""The funnel of one course, for ``drip stats``: how many signed up and confirmed, then per
day how many were sent the lesson, opened its class, left after it, bounced, complained
or failed.

Counted from the tables as they are: a lesson is *sent* when the mail server accepted
it, *clicked* when its class link was followed at least once, *bounced* when a hard
bounce came back for it (refused at the SMTP conversation, or later by email or a
provider's webhook), *complained* when it was reported as spam, *failed* when it was
given up otherwise (too many temporary failures). A person who unsubscribed is counted
after the last lesson they were sent (before day 1: not in any day). ``since`` narrows
everything to the people who signed up from then on.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, distinct, func, select
from sqlmodel import col

from drip.core.courses import Course
from drip.core.models import Click, Delivery, Enrollment, MailEvent, Subscriber
from drip.core.states import (
    CONDITION_NOT_MET,
    ClickLink,
    DeliveryStatus,
    EmailKind,
    EnrollmentStatus,
    MailEventKind,
    SubscriberStatus,
)
from drip.outbox.kinds import lesson_day


def funnel(
    connection: Connection, course: Course, *, since: datetime | None = None
) -> dict[str, Any]:
    """The course's funnel as plain data (``drip stats --json`` prints it as is)."""
    cohort = [col(Enrollment.course_slug) == course.slug]
    if since is not None:
        cohort.append(col(Enrollment.created_at) >= since)
    statuses = Counter(
        {
            str(status): int(count)
            for status, count in connection.execute(
                select(col(Enrollment.status), func.count())
                .where(*cohort)
                .group_by(col(Enrollment.status))
            )
        }
    )
    # the people enrolled (in this cohort), by their own status: active, pending, left …
    people = Counter(
        {
            str(status): int(count)
            for status, count in connection.execute(
                select(col(Subscriber.status), func.count())
                .join(Enrollment, col(Enrollment.subscriber_id) == col(Subscriber.id))
                .where(*cohort)
                .group_by(col(Subscriber.status))
            )
        }
    )
    confirmed = connection.execute(
        select(func.count())
        .select_from(Enrollment)
        .where(*cohort, col(Enrollment.started_at).is_not(None))
    ).scalar_one()
    lessons = (
        select(col(Delivery.key))
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
        .where(*cohort, col(Delivery.kind) == EmailKind.LESSON)
    )
    outcomes: Counter[tuple[str, str]] = Counter()
    for key, status, count in connection.execute(
        lessons.add_columns(col(Delivery.status), func.count())
        .where(col(Delivery.status).in_([DeliveryStatus.SENT, DeliveryStatus.FAILED]))
        .group_by(col(Delivery.key), col(Delivery.status))
    ):
        outcomes[lesson_day(key)[0], status] += count
    # lessons a day's send_if ruled out (the next day went in their slot)
    for key, count in connection.execute(
        lessons.add_columns(func.count())
        .where(
            col(Delivery.status) == DeliveryStatus.SKIPPED,
            col(Delivery.last_error).startswith(CONDITION_NOT_MET),
        )
        .group_by(col(Delivery.key))
    ):
        outcomes[lesson_day(key)[0], "skipped"] += count
    # lessons a hard bounce or a complaint came back for (at the SMTP conversation, by
    # email or by a provider's webhook): a refused one is counted bounced, not failed
    for key, kind, status, count in connection.execute(
        lessons.add_columns(
            col(MailEvent.kind), col(Delivery.status), func.count(distinct(col(Delivery.id)))
        )
        .join(MailEvent, col(MailEvent.delivery_id) == col(Delivery.id))
        .where(col(MailEvent.kind).in_([MailEventKind.HARD, MailEventKind.COMPLAINT]))
        .group_by(col(Delivery.key), col(MailEvent.kind), col(Delivery.status))
    ):
        day_id = lesson_day(key)[0]
        if kind == MailEventKind.COMPLAINT:
            outcomes[day_id, "complained"] += count
            continue
        outcomes[day_id, "bounced"] += count
        if status == DeliveryStatus.FAILED:
            outcomes[day_id, DeliveryStatus.FAILED] -= count
    for key, count in connection.execute(
        lessons.add_columns(func.count())
        .join(Click, col(Click.delivery_id) == col(Delivery.id))
        .where(col(Click.link) == ClickLink.CLASS)
        .group_by(col(Delivery.key))
    ):
        outcomes[lesson_day(key)[0], "clicked"] += count
    # who left, and the lessons they were sent: each counts after their last one
    last_lesson: dict[int | None, str] = {}
    for enrollment_id, key in connection.execute(
        select(col(Enrollment.id), col(Delivery.key))
        .join(Delivery, col(Delivery.enrollment_id) == col(Enrollment.id))
        .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
        .where(
            *cohort,
            col(Delivery.kind) == EmailKind.LESSON,
            col(Delivery.status) == DeliveryStatus.SENT,
            col(Enrollment.status) == EnrollmentStatus.CANCELLED,
            col(Subscriber.status) == SubscriberStatus.UNSUBSCRIBED,
        )
        .order_by(col(Delivery.sent_at), col(Delivery.id))
    ):
        last_lesson[enrollment_id] = lesson_day(key)[0]  # in sending order: the last stays
    for day_id in last_lesson.values():
        outcomes[day_id, "unsubscribed"] += 1
    days = []
    for number, day in enumerate(course.days, start=1):
        sent = outcomes[day.id, DeliveryStatus.SENT]
        clicked = outcomes[day.id, "clicked"]
        days.append(
            {
                "day": number,
                "id": day.id,
                "sent": sent,
                "clicked": clicked,
                "click_rate": _rate(clicked, sent),
                "unsubscribed": outcomes[day.id, "unsubscribed"],
                "bounced": outcomes[day.id, "bounced"],
                "complained": outcomes[day.id, "complained"],
                "failed": outcomes[day.id, DeliveryStatus.FAILED],
                "skipped": outcomes[day.id, "skipped"],
            }
        )
    completed = statuses[EnrollmentStatus.COMPLETED]
    paused, pauses, restarted, restarts, own_hour = connection.execute(
        select(
            func.count(col(Enrollment.id)).filter(col(Enrollment.pauses) > 0),
            func.coalesce(func.sum(col(Enrollment.pauses)), 0),
            func.count(col(Enrollment.id)).filter(col(Enrollment.restarts) > 0),
            func.coalesce(func.sum(col(Enrollment.restarts)), 0),
            func.count(col(Enrollment.send_at)),
        ).where(*cohort)
    ).one()
    return {
        "course": course.slug,
        "since": since.isoformat() if since else None,
        "signups": sum(statuses.values()),
        "confirmed": confirmed,
        "completed": completed,
        "completion_rate": _rate(completed, confirmed),
        "subscribers": dict(sorted(people.items())),
        "enrollments": dict(sorted(statuses.items())),
        # the subscribers' own controls: who paused (and how often), restarted, or moved
        # their lessons to another hour
        "controls": {
            "paused": int(paused),
            "pauses": int(pauses),
            "restarted": int(restarted),
            "restarts": int(restarts),
            "own_hour": int(own_hour),
        },
        "days": days,
    }


def controls_line(result: dict[str, Any]) -> str:
    """The subscribers' own controls in a ``funnel`` as one line, for people."""
    c = result["controls"]

    def times(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    return (
        f"paused {c['paused']} ({times(c['pauses'], 'pause')}) · "
        f"restarted {c['restarted']} ({times(c['restarts'], 'restart')}) · "
        f"own hour {c['own_hour']}"
    )


def _rate(part: int, whole: int) -> float | None:
    """``part / whole`` rounded for people (3 decimals); None when there is no whole."""
    return round(part / whole, 3) if whole else None
