"""Pure due-time arithmetic: local send times, weekdays, DST, backoff."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from drip.core.schedule import (
    local_send_time,
    next_allowed_day,
    next_due,
    next_slot,
    resume_due,
    retry_at,
)

SEVEN = time(7, 0)
ALL_DAYS = frozenset(range(7))
WEEKDAYS = frozenset(range(5))


@pytest.mark.parametrize(
    ("zone", "sent_local", "expected_local"),
    [
        # Los Angeles falls back on 2026-11-01 and springs forward on 2026-03-08.
        ("America/Los_Angeles", datetime(2026, 10, 31, 7, 0), datetime(2026, 11, 1, 7, 0)),
        ("America/Los_Angeles", datetime(2026, 3, 7, 7, 0), datetime(2026, 3, 8, 7, 0)),
        # London: 2026-03-29 (forward) and 2026-10-25 (back).
        ("Europe/London", datetime(2026, 3, 28, 7, 0), datetime(2026, 3, 29, 7, 0)),
        ("Europe/London", datetime(2026, 10, 24, 23, 59), datetime(2026, 10, 25, 7, 0)),
        # Auckland: 2026-04-05 (back) and 2026-09-27 (forward).
        ("Pacific/Auckland", datetime(2026, 4, 4, 7, 0), datetime(2026, 4, 5, 7, 0)),
        ("Pacific/Auckland", datetime(2026, 9, 26, 0, 5), datetime(2026, 9, 27, 7, 0)),
    ],
)
def test_next_lesson_is_next_local_day_at_send_time_across_dst(
    zone: str, sent_local: datetime, expected_local: datetime
) -> None:
    """Across a DST change the next lesson is still the next local day at 07:00 local."""
    tz = ZoneInfo(zone)
    sent = sent_local.replace(tzinfo=tz).astimezone(UTC)
    due = next_due(last_sent_at=sent, zone=tz, send_at=SEVEN, weekdays=ALL_DAYS)
    assert due.astimezone(tz).replace(tzinfo=None) == expected_local
    assert due.tzinfo is UTC


def test_nonexistent_local_time_stays_on_its_day() -> None:
    """02:30 on a spring-forward day does not exist; the lesson still goes out that day."""
    tz = ZoneInfo("America/Los_Angeles")
    due = local_send_time(date(2026, 3, 8), time(2, 30), tz)
    assert due.astimezone(tz).date() == date(2026, 3, 8)
    assert due.astimezone(tz).hour == 3


def test_ambiguous_local_time_uses_the_first() -> None:
    """01:30 happens twice when clocks fall back; the first one is used, once."""
    tz = ZoneInfo("America/Los_Angeles")
    due = local_send_time(date(2026, 11, 1), time(1, 30), tz)
    assert due == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)  # 01:30 PDT


def test_local_day_decides_not_utc_day() -> None:
    """Sent late evening in Auckland (still the previous UTC day): next is tomorrow local."""
    tz = ZoneInfo("Pacific/Auckland")
    sent = datetime(2026, 11, 25, 22, 0, tzinfo=tz).astimezone(UTC)  # 09:00 UTC, same day
    due = next_due(last_sent_at=sent, zone=tz, send_at=SEVEN, weekdays=ALL_DAYS)
    assert due.astimezone(tz) == datetime(2026, 11, 26, 7, 0, tzinfo=tz)


def test_send_days_skip_the_weekend() -> None:
    """With Monday-Friday only, a lesson sent on Friday is followed on Monday."""
    assert next_allowed_day(date(2026, 11, 27), WEEKDAYS) == date(2026, 11, 30)  # Fri → Mon
    assert next_allowed_day(date(2026, 11, 24), WEEKDAYS) == date(2026, 11, 25)


def test_resume_never_doubles_a_day() -> None:
    """A restart on a day a lesson already went out waits for the next slot."""
    tz = ZoneInfo("Europe/London")
    sent = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    now = sent + timedelta(hours=5)
    assert resume_due(
        now=now, last_sent_at=sent, zone=tz, send_at=SEVEN, weekdays=ALL_DAYS
    ) == datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    assert resume_due(now=now, last_sent_at=None, zone=tz, send_at=SEVEN, weekdays=ALL_DAYS) == now


def test_retry_backoff_doubles_and_is_capped() -> None:
    """Retries wait 5, 10, 20 … minutes, never more than 6 hours, however many attempts
    (an email that never gives up, such as one with a broken template, reaches many)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    waits = [retry_at(now=now, attempts=n) - now for n in (1, 2, 3, 10, 40, 10_000)]
    assert waits == [
        timedelta(minutes=5),
        timedelta(minutes=10),
        timedelta(minutes=20),
        timedelta(hours=6),
        timedelta(hours=6),
        timedelta(hours=6),
    ]


def test_the_next_allowed_day_is_the_first_one_after() -> None:
    """Each day after is tried in turn; an empty set of weekdays is refused, not looped on."""
    monday = date(2026, 11, 23)
    assert next_allowed_day(monday, frozenset({0, 2})) == date(2026, 11, 25)  # Wednesday
    assert next_allowed_day(monday, frozenset({0})) == date(2026, 11, 30)
    with pytest.raises(ValueError, match="^at least one weekday must be allowed$"):
        next_allowed_day(monday, frozenset())


def test_next_slot_is_the_first_send_time_not_before_now_on_an_allowed_day() -> None:
    """Before today's send time on an allowed day: today; after it, or on a day not
    allowed: the next allowed day, at the send time in the zone (DST included)."""
    zone = ZoneInfo("America/New_York")
    weekdays = frozenset({0, 2, 4})  # Monday, Wednesday, Friday
    seven = time(7, 0)

    def slot(local: datetime) -> datetime:
        now = local.replace(tzinfo=zone).astimezone(UTC)
        return next_slot(now=now, zone=zone, send_at=seven, weekdays=weekdays).astimezone(zone)

    monday = datetime(2026, 11, 2)  # the day after DST ends
    assert slot(monday.replace(hour=6)) == datetime(2026, 11, 2, 7, tzinfo=zone)
    assert slot(monday.replace(hour=7)) == datetime(2026, 11, 2, 7, tzinfo=zone)
    assert slot(monday.replace(hour=7, minute=1)) == datetime(2026, 11, 4, 7, tzinfo=zone)
    assert slot(datetime(2026, 11, 3, 5)) == datetime(2026, 11, 4, 7, tzinfo=zone)
    assert slot(datetime(2026, 11, 6, 8)) == datetime(2026, 11, 9, 7, tzinfo=zone)
    # east of UTC, where the UTC date is still yesterday: the local date decides
    auckland = ZoneInfo("Pacific/Auckland")
    now = datetime(2026, 11, 3, 8, tzinfo=auckland)  # Tuesday 08:00 local, Monday in UTC
    every_day = frozenset(range(7))
    expected = datetime(2026, 11, 4, 7, tzinfo=auckland)
    assert next_slot(now=now, zone=auckland, send_at=seven, weekdays=every_day) == expected
