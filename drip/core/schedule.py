"""Pure scheduling: when a lesson is due, from plain values and ``now``. No I/O.

A subscriber gets day 1 as soon as they confirm. Every later day is due at the course's
``send_at`` (or the subscriber's own hour) in the subscriber's own zone, on the first
allowed weekday *after* the local calendar day on which the previous lesson went out.
Because the next due time is computed from when the previous lesson was actually sent, an
outage shifts the schedule instead of producing a burst, and a DST change can neither skip
nor double a day: the arithmetic is on local calendar dates, converted to UTC only at the
end.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo


class Pace(NamedTuple):
    """When one enrollment's lessons go: the subscriber's zone and hour (hers, else the
    course's), the course's allowed weekdays, which run of the course this is (one more
    per restart), and a pause (no lesson before ``paused_until``)."""

    zone: ZoneInfo
    send_at: time
    weekdays: frozenset[int]
    run: int = 1
    paused_until: datetime | None = None

    def earliest(self, now: datetime) -> datetime | None:
        """No lesson before this: the first allowed slot once a pause is over."""
        if self.paused_until is None or self.paused_until <= now:
            return None
        return next_slot(
            now=self.paused_until, zone=self.zone, send_at=self.send_at, weekdays=self.weekdays
        )


#: first retry after a temporary failure; doubles per attempt
RETRY_BASE = timedelta(minutes=5)
#: longest wait between two attempts
RETRY_CAP = timedelta(hours=6)


def local_send_time(day: date, send_at: time, zone: ZoneInfo) -> datetime:
    """``send_at`` on local ``day`` as aware UTC.

    A wall time that does not exist (the spring-forward gap) resolves to the same
    instant as the hour before the gap plus the minutes (02:30 → 03:30 DST); an ambiguous
    one (autumn fold) to its first occurrence. Either way it stays on ``day``.
    """
    return datetime.combine(day, send_at, tzinfo=zone).astimezone(UTC)


def next_allowed_day(after: date, weekdays: frozenset[int]) -> date:
    """The first date strictly after ``after`` whose weekday is allowed."""
    if not weekdays:
        raise ValueError("at least one weekday must be allowed")
    candidate = after + timedelta(days=1)
    while candidate.weekday() not in weekdays:
        candidate += timedelta(days=1)
    return candidate


def next_due(
    *, last_sent_at: datetime, zone: ZoneInfo, send_at: time, weekdays: frozenset[int]
) -> datetime:
    """When the lesson after one sent at ``last_sent_at`` is due (aware UTC)."""
    sent_local_day = last_sent_at.astimezone(zone).date()
    return local_send_time(next_allowed_day(sent_local_day, weekdays), send_at, zone)


def resume_due(
    *,
    now: datetime,
    last_sent_at: datetime | None,
    zone: ZoneInfo,
    send_at: time,
    weekdays: frozenset[int],
) -> datetime:
    """When the next lesson is due for an enrollment that (re)starts at ``now``.

    At once, unless a lesson already went out on today's local date: then the usual
    next slot, so a resubscribe never yields two lessons on one day.
    """
    if last_sent_at is None:
        return now
    return max(
        now, next_due(last_sent_at=last_sent_at, zone=zone, send_at=send_at, weekdays=weekdays)
    )


def retry_at(*, now: datetime, attempts: int) -> datetime:
    """When to try again after ``attempts`` failed attempts (exponential, capped)."""
    delay = RETRY_BASE * (2 ** min(max(attempts - 1, 0), 20))  # 2**20 × 5 min ≫ the cap
    return now + min(delay, RETRY_CAP)


@dataclass(frozen=True)
class NextLesson:
    """What an enrollment gets next: a day and when, or nothing (the course is finished)."""

    day_id: str | None
    due_at: datetime | None


def plan_next(
    *,
    day_ids: Sequence[str],
    done: Collection[str],
    last_sent_at: datetime | None,
    resuming: bool,
    now: datetime,
    zone: ZoneInfo,
    send_at: time,
    weekdays: frozenset[int],
    not_before: datetime | None = None,
) -> NextLesson:
    """The first course day not in ``done``, and when it is due.

    Days are matched by id, so days inserted, reordered or removed in the YAML never
    cause a resend. ``resuming`` (a start or restart) makes it due at once unless a
    lesson already went out today; otherwise it is due on the next allowed local day
    after the last lesson (or after ``now`` when there is none), and not before
    ``not_before``.
    """
    day_id = next((day for day in day_ids if day not in done), None)
    if day_id is None:
        return NextLesson(None, None)
    if resuming:
        due = resume_due(
            now=now, last_sent_at=last_sent_at, zone=zone, send_at=send_at, weekdays=weekdays
        )
    else:
        due = next_due(
            last_sent_at=last_sent_at or now, zone=zone, send_at=send_at, weekdays=weekdays
        )
    if not_before is not None:
        due = max(due, not_before)
    return NextLesson(day_id, due)


def next_slot(
    *, now: datetime, zone: ZoneInfo, send_at: time, weekdays: frozenset[int]
) -> datetime:
    """The first ``send_at`` on an allowed local day that is not before ``now``."""
    today = now.astimezone(zone).date()
    day = today if today.weekday() in weekdays else next_allowed_day(today, weekdays)
    due = local_send_time(day, send_at, zone)
    if due < now:
        due = local_send_time(next_allowed_day(day, weekdays), send_at, zone)
    return due


def pause_end(
    *, now: datetime, days: int, zone: ZoneInfo, send_at: time, last_sent_at: datetime | None
) -> datetime:
    """When a pause of ``days`` mornings asked for at ``now`` ends (aware UTC): the local
    midnight after the last morning skipped. The first morning skipped is today's when
    today's ``send_at`` is still to come and no lesson went out today (one that did leaves
    nothing to skip today), else tomorrow's."""
    today = now.astimezone(zone).date()
    had_today = last_sent_at is not None and last_sent_at.astimezone(zone).date() == today
    still_to_come = local_send_time(today, send_at, zone) > now and not had_today
    first = today if still_to_come else today + timedelta(days=1)
    return datetime.combine(first + timedelta(days=days), time(0), tzinfo=zone).astimezone(UTC)


def next_morning(*, now: datetime, pace: Pace, last_sent_at: datetime | None) -> datetime:
    """The next allowed slot at ``pace``'s hour, never on a day a lesson already went out
    (one a day) and never inside a pause: where a rescheduled lesson goes."""
    due = next_slot(now=now, zone=pace.zone, send_at=pace.send_at, weekdays=pace.weekdays)
    if last_sent_at is not None:
        due = max(
            due,
            next_due(
                last_sent_at=last_sent_at,
                zone=pace.zone,
                send_at=pace.send_at,
                weekdays=pace.weekdays,
            ),
        )
    earliest = pace.earliest(now)
    return max(due, earliest) if earliest is not None else due
