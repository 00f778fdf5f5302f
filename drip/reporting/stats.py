"""The funnel of one course, for ``drip stats``: how many signed up and confirmed, then per
day how many were sent the lesson, opened its class, left after it, bounced, complained
or failed.

Read from the tallies the database keeps as its rows change (``drip.store.tallies``,
which says what each count is made of): the dashboard and ``stats`` cost the same for
any size of list. Counted as the tables are: a lesson is *sent* when the mail server
accepted it, *clicked* when its class link was followed at least once, *bounced* when a hard
bounce came back for it (refused at the SMTP conversation, or later by email or a
provider's webhook), *complained* when it was reported as spam, *failed* when it was
given up otherwise (too many temporary failures). A person who unsubscribed is counted
after the last lesson they had (before day 1: not in any day). ``since`` narrows
everything to the people who signed up from then on (counted from their rows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from drip.core.courses import Course
from drip.core.states import DeliveryStatus, EnrollmentStatus
from drip.outbox.kinds import lesson_day
from drip.store import tallies


def funnel(
    connection: Connection, course: Course, *, since: datetime | None = None
) -> dict[str, Any]:
    """The course's funnel as plain data (``drip stats --json`` prints it as is)."""
    return funnels(connection, [course], since=since)[0]


def funnels(
    connection: Connection, courses: Iterable[Course], *, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Each course's funnel, from the tallies the database keeps (a cohort, ``since``,
    is counted from its rows)."""
    counts = (
        tallies.totals(connection) if since is None else tallies.recount(connection, since=since)
    )
    return [funnel_of(counts, course, since=since) for course in courses]


def funnel_of(
    counts: tallies.Tallies, course: Course, *, since: datetime | None = None
) -> dict[str, Any]:
    """The course's funnel from tallies already read (``drip.store.tallies``)."""
    prefix = course.slug + ","
    statuses: Counter[str] = Counter()
    people: Counter[str] = Counter()
    outcomes: Counter[tuple[str, str]] = Counter()
    for (name, labels), count in counts.items():
        if not labels.startswith(prefix):
            continue
        rest = labels[len(prefix) :]
        if name == "enrollments":
            statuses[rest] += count
        elif name == "people":
            people[rest] += count
        elif name == "lessons":
            key, _, outcome = rest.rpartition(",")
            outcomes[lesson_day(key)[0], outcome] += count
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
                # a lesson refused for good is counted bounced, not failed
                "failed": outcomes[day.id, DeliveryStatus.FAILED]
                - outcomes[day.id, "bounced_failed"],
                "skipped": outcomes[day.id, "skipped"],
            }
        )
    completed = statuses[EnrollmentStatus.COMPLETED]
    confirmed = counts["confirmed", course.slug]

    def control(name: str) -> int:
        return counts[name, course.slug]

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
            name: control(name)
            for name in ("paused", "pauses", "restarted", "restarts", "own_hour")
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
