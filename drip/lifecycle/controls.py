"""What a subscriber may change about her own course, from her page (``/me/{token}``), and
the operator for her (the CLI, the dashboard): pause it for some mornings, resume, start
it again from day 1, or have her lessons at another local hour.

Each runs in the caller's transaction on one enrollment and changes nothing for someone
who left or was suppressed. Lessons are never sent here: the one queued lesson (an
enrollment has at most one) is moved to its new time, or, for a restart, day 1 of the new
run is queued; the send engine does the rest, one a day, as always.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select, update
from sqlmodel import col

from drip.core import schedule
from drip.core.courses import Catalog, Course
from drip.core.exceptions import InvalidSubscriber, InvalidToken
from drip.core.models import Delivery, Enrollment
from drip.core.schedule import NextLesson
from drip.core.states import (
    DeliveryStatus,
    EmailKind,
    EnrollmentStatus,
    EventType,
    SubscriberStatus,
)
from drip.lifecycle.enrollment import Member, find_member
from drip.outbox import deliveries, webhooks
from drip.outbox.kinds import lesson_day

#: the longest pause, in mornings
MAX_PAUSE_DAYS = 30


class Control(StrEnum):
    PAUSE = "pause"  #: no lesson for some mornings
    RESUME = "resume"  #: a pause ends now
    RESTART = "restart"  #: the course again from day 1
    TIME = "time"  #: lessons at another local hour

    @property
    def done(self) -> str:
        """What it did, in a word: "paused", "resumed", "restarted", "moved"."""
        return {"pause": "paused", "resume": "resumed", "restart": "restarted"}.get(
            self.value, "moved"
        )


_HOUR = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def read_inputs(control: Control, fields: Mapping[str, str]) -> tuple[int | None, time | None]:
    """(days, send_at) for ``control`` from a form's ``days`` and ``send_at`` fields;
    ``InvalidSubscriber`` naming the field when one is wrong."""
    if control == Control.PAUSE:
        return read_days(fields.get("days", "")), None
    if control == Control.TIME:
        return None, read_hour(fields.get("send_at", ""))
    return None, None


def read_days(raw: str) -> int:
    """A pause's length: a whole number of mornings, 1 to ``MAX_PAUSE_DAYS``."""
    raw = raw.strip()
    if not re.fullmatch(r"[0-9]{1,2}", raw) or not 1 <= int(raw) <= MAX_PAUSE_DAYS:
        raise InvalidSubscriber(
            f"days: choose a pause of 1 to {MAX_PAUSE_DAYS} mornings, not {raw!r}", field="days"
        )
    return int(raw)


def read_hour(raw: str) -> time:
    """A local hour as HH:MM (00:00 to 23:59)."""
    match = _HOUR.fullmatch(raw.strip())
    if match is None:
        raise InvalidSubscriber(
            f"send_at: give a time as HH:MM, e.g. 18:30, not {raw.strip()!r}", field="send_at"
        )
    return time(int(match[1]), int(match[2]))


@dataclass(frozen=True)
class Changed:
    """What a control did."""

    #: False when nothing changed (``refused`` says why, when it was refused)
    changed: bool
    #: the next lesson (day id and when, UTC), when one is queued
    next_lesson: NextLesson | None = None
    #: why the control was not applied: the subscriber left, or was suppressed
    refused: str | None = None


def apply(
    connection: Connection,
    *,
    member: Member,
    course: Course,
    control: Control,
    now: datetime,
    days: int | None = None,
    send_at: time | None = None,
) -> Changed:
    """``control`` on ``member``'s enrollment: every door (her page, the CLI, the
    dashboard) comes here. ``days`` goes with a pause, ``send_at`` with a new hour."""
    if control == Control.PAUSE:
        if days is None:
            raise ValueError("a pause needs its number of mornings")
        return pause(connection, member=member, course=course, days=days, now=now)
    if control == Control.TIME:
        if send_at is None:
            raise ValueError("a new hour needs its time")
        return set_time(connection, member=member, course=course, send_at=send_at, now=now)
    if control == Control.RESUME:
        return resume(connection, member=member, course=course, now=now)
    return restart(connection, member=member, course=course, now=now)


def refusal(member: Member, control: Control) -> str | None:
    """Why ``control`` cannot apply to ``member``, if it cannot."""
    if member.status == SubscriberStatus.SUPPRESSED:
        return "this address no longer receives our email, so nothing was changed"
    if member.status != SubscriberStatus.ACTIVE or member.enrollment_status in (
        EnrollmentStatus.PENDING,
        EnrollmentStatus.CANCELLED,
    ):
        return "this address is not receiving this course, so nothing was changed"
    if member.enrollment_status == EnrollmentStatus.COMPLETED and control != Control.RESTART:
        return "you have had every lesson of this course: you can start it again"
    return None


def pause(
    connection: Connection, *, member: Member, course: Course, days: int, now: datetime
) -> Changed:
    """No lesson on the next ``days`` mornings (1–30); the next one on the first allowed
    morning after them, and the others one a day after it, as before."""
    if not 1 <= days <= MAX_PAUSE_DAYS:
        raise ValueError(f"a pause is 1 to {MAX_PAUSE_DAYS} mornings")
    if why := refusal(member, Control.PAUSE):
        return Changed(False, refused=why)
    pace = member.pace(course)
    _, last_sent = _history(connection, member, now)
    until = schedule.pause_end(
        now=now, days=days, zone=pace.zone, send_at=pace.send_at, last_sent_at=last_sent
    )
    connection.execute(
        update(Enrollment)
        .where(col(Enrollment.id) == member.enrollment_id)
        .values(paused_until=until, pauses=col(Enrollment.pauses) + 1)
    )
    plan = _reschedule(connection, member, course, now=now, paused_until=until)
    _tell(connection, EventType.ENROLLMENT_PAUSED, member, course, plan, now, paused_until=until)
    return Changed(True, plan)


def resume(connection: Connection, *, member: Member, course: Course, now: datetime) -> Changed:
    """End a pause: the next lesson on the next allowed morning (never two in a day)."""
    if why := refusal(member, Control.RESUME):
        return Changed(False, refused=why)
    if member.paused_until is None or member.paused_until <= now:
        return Changed(False, _queued_plan(connection, member))
    connection.execute(
        update(Enrollment)
        .where(col(Enrollment.id) == member.enrollment_id)
        .values(paused_until=None)
    )
    plan = _reschedule(connection, member, course, now=now, paused_until=None)
    _tell(connection, EventType.ENROLLMENT_RESUMED, member, course, plan, now)
    return Changed(True, plan)


def set_time(
    connection: Connection, *, member: Member, course: Course, send_at: time, now: datetime
) -> Changed:
    """Her lessons from now on at ``send_at``, local time, in her zone (the course's
    own ``send_at`` stays as it is for everyone else)."""
    if why := refusal(member, Control.TIME):
        return Changed(False, refused=why)
    hour = send_at.strftime("%H:%M")
    if member.send_at == hour:
        return Changed(False, _queued_plan(connection, member))
    connection.execute(
        update(Enrollment).where(col(Enrollment.id) == member.enrollment_id).values(send_at=hour)
    )
    return Changed(
        True,
        _reschedule(
            connection, member, course, now=now, paused_until=member.paused_until, send_at=hour
        ),
    )


def restart(connection: Connection, *, member: Member, course: Course, now: datetime) -> Changed:
    """The course again from day 1, on the next allowed morning, one a day: a new run, in
    which each day goes once (a lesson of the old run not yet sent is cancelled). The
    after-course email still goes once per enrollment, ever. A pause ends."""
    if why := refusal(member, Control.RESTART):
        return Changed(False, refused=why)
    run = member.run + 1
    connection.execute(
        update(Enrollment)
        .where(col(Enrollment.id) == member.enrollment_id)
        .values(
            run=run,
            restarts=col(Enrollment.restarts) + 1,
            status=EnrollmentStatus.ACTIVE,
            completed_at=None,
            paused_until=None,
        )
    )
    connection.execute(
        update(Delivery)
        .where(
            col(Delivery.enrollment_id) == member.enrollment_id,
            col(Delivery.kind) == EmailKind.LESSON,
            col(Delivery.status) == DeliveryStatus.SCHEDULED,
        )
        .values(status=DeliveryStatus.CANCELLED, cancelled_at=now)
    )
    history, last_sent = _history(connection, member, now)
    pace = course.pace(timezone=member.timezone, send_at=member.send_at, run=run)
    plan = deliveries.queue_next_lesson(
        connection,
        enrollment_id=member.enrollment_id,
        course=course,
        pace=pace,
        now=now,
        history=history,
        last_sent_at=last_sent,
        resuming=True,
        not_before=schedule.next_morning(now=now, pace=pace, last_sent_at=last_sent),
    )
    _tell(connection, EventType.ENROLLMENT_RESTARTED, member, course, plan, now)
    return Changed(True, plan)


def _tell(
    connection: Connection,
    event: EventType,
    member: Member,
    course: Course,
    plan: NextLesson | None,
    now: datetime,
    **data: Any,
) -> None:
    """The webhooks' event for a control: with the next lesson (day and when), if any."""
    day_id = plan.day_id if plan is not None else None
    webhooks.emit(
        connection,
        event,
        enrollment_id=member.enrollment_id,
        now=now,
        next_lesson=None
        if plan is None or day_id is None
        else {"day": {"id": day_id, "number": course.day_number(day_id)}, "due_at": plan.due_at},
        **data,
    )


def _reschedule(
    connection: Connection,
    member: Member,
    course: Course,
    *,
    now: datetime,
    paused_until: datetime | None,
    send_at: str | None = None,
) -> NextLesson | None:
    """Move the enrollment's queued lesson, if any, to the next morning its pace allows;
    the lesson that comes next, and when."""
    queued = _queued(connection, member)
    if queued is None:  # being sent right now, or none left: the next follows the new pace
        return None
    pace = course.pace(
        timezone=member.timezone,
        send_at=send_at or member.send_at,
        run=member.run,
        paused_until=paused_until,
    )
    _, last_sent = _history(connection, member, now)
    due = schedule.next_morning(now=now, pace=pace, last_sent_at=last_sent)
    connection.execute(
        update(Delivery)
        .where(col(Delivery.id) == queued.id, col(Delivery.status) == DeliveryStatus.SCHEDULED)
        .values(due_at=due)
    )
    return NextLesson(lesson_day(queued.key)[0], due)


def _history(
    connection: Connection, member: Member, now: datetime
) -> tuple[dict[str, str], datetime | None]:
    """The enrollment's lessons by key with their status, and when the last one went:
    ``now`` when one is being sent at this moment (it goes today, so nothing else may)."""
    history, last_sent = deliveries.lesson_histories(connection, [member.enrollment_id]).get(
        member.enrollment_id, ({}, None)
    )
    if DeliveryStatus.SENDING in history.values():
        last_sent = now
    return history, last_sent


def _queued(connection: Connection, member: Member) -> Any:
    """The enrollment's queued lesson (id, key, due_at): there is at most one."""
    return connection.execute(
        select(col(Delivery.id), col(Delivery.key), col(Delivery.due_at))
        .where(
            col(Delivery.enrollment_id) == member.enrollment_id,
            col(Delivery.kind) == EmailKind.LESSON,
            col(Delivery.status) == DeliveryStatus.SCHEDULED,
        )
        .limit(1)
    ).one_or_none()


def _queued_plan(connection: Connection, member: Member) -> NextLesson | None:
    """The enrollment's queued lesson as it stands."""
    queued = _queued(connection, member)
    return NextLesson(lesson_day(queued.key)[0], queued.due_at) if queued else None


@dataclass(frozen=True)
class Overview:
    """A subscriber's course as her page shows it."""

    member: Member
    course: Course
    #: lessons she has had in this run of the course
    had: int
    #: the next lesson: its day number and when, in her zone; None when none is queued
    next_number: int | None
    next_at: datetime | None
    #: her zone's name and hour (hers, else the course's)
    zone: str
    send_at: time
    #: a pause still running
    paused_until: datetime | None


def overview(
    connection: Connection, *, enrollment_uid: str, catalog: Catalog, now: datetime
) -> Overview | None:
    """What her page shows; None when the enrollment or its course is gone."""
    try:
        member = find_member(connection, enrollment_uid=enrollment_uid)
    except InvalidToken:
        return None
    course = catalog.find(member.course_slug)
    if course is None:
        return None
    history, _ = deliveries.lesson_histories(connection, [member.enrollment_id]).get(
        member.enrollment_id, ({}, None)
    )
    this_run = deliveries.run_history(history, member.run)
    had = sum(status == DeliveryStatus.SENT for status in this_run.values())
    plan = _queued_plan(connection, member)
    pace = member.pace(course)
    day = course.day(plan.day_id) if plan is not None and plan.day_id else None
    due = plan.due_at if plan is not None and day is not None else None
    paused = member.paused_until if member.paused_until and member.paused_until > now else None
    return Overview(
        member=member,
        course=course,
        had=had,
        next_number=course.day_number(day.id) if day is not None else None,
        next_at=due.astimezone(pace.zone) if day is not None and due is not None else None,
        zone=pace.zone.key,
        send_at=pace.send_at,
        paused_until=paused.astimezone(pace.zone) if paused else None,
    )
