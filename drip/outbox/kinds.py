"""The one table of email kinds: what sets each kind of email apart, wherever it is read.

The outbox reads who may still receive each kind (checked right before SMTP) and how its
row is keyed; the composer reads its template, subject, preheader and whether it carries
an unsubscribe link; the dashboard and previews list the kinds a course can send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from drip.core.models import new_uid
from drip.core.states import EmailKind, EnrollmentStatus, SubscriberStatus


class Repeats(StrEnum):
    """How often one enrollment may be sent the kind: its row key (unique per enrollment)."""

    EVERY_TIME = "every-time"  #: ``kind:RANDOM``: each one queued is sent
    HOURLY = "hourly"  #: ``kind:YYYYMMDDHH``: at most one an hour
    ONCE = "once"  #: ``kind:once``: at most one per enrollment, ever
    #: a lesson: its key is its day's id, ``DAY.RUN`` from the course's second run on
    #: (day ids never contain a colon or a dot)
    PER_DAY = "per-day"


@dataclass(frozen=True)
class Kind:
    #: subscriber statuses that may still receive it
    subscribers: frozenset[str]
    #: enrollment statuses that may still receive it
    enrollments: frozenset[str]
    repeats: Repeats
    #: the email's template (``emails/TEMPLATE.mjml``)
    template: str
    #: ``{title}`` is the course's title; a lesson's (and the after-course email's) own
    #: subject and preheader come from the course file
    subject: str = ""
    preheader: str = ""
    #: carries the List-Unsubscribe headers and a footer link
    unsubscribe: bool = True

    def wants(self, subscriber_status: str, enrollment_status: str) -> bool:
        """May an email of this kind still go to someone in these states?"""
        return subscriber_status in self.subscribers and enrollment_status in self.enrollments


_ACTIVE = frozenset({SubscriberStatus.ACTIVE})

KINDS: dict[EmailKind, Kind] = {
    EmailKind.LESSON: Kind(
        _ACTIVE, frozenset({EnrollmentStatus.ACTIVE}), Repeats.PER_DAY, template="lesson"
    ),
    # pending: a first signup; unsubscribed: someone who left and signed up again
    EmailKind.CONFIRM: Kind(
        frozenset(
            {SubscriberStatus.PENDING, SubscriberStatus.ACTIVE, SubscriberStatus.UNSUBSCRIBED}
        ),
        frozenset({EnrollmentStatus.PENDING, EnrollmentStatus.CANCELLED}),
        Repeats.EVERY_TIME,
        template="confirm",
        subject="Please confirm: {title}",
        preheader="One click to confirm your place.",
        unsubscribe=False,
    ),
    EmailKind.WELCOME: Kind(
        _ACTIVE,
        frozenset({EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED}),
        Repeats.EVERY_TIME,
        template="welcome",
        subject="Welcome to {title}",
        preheader="Your first lesson is on its way.",
    ),
    EmailKind.GOODBYE: Kind(
        frozenset({SubscriberStatus.UNSUBSCRIBED}),
        frozenset({EnrollmentStatus.CANCELLED}),
        Repeats.EVERY_TIME,
        template="goodbye",
        subject="You are unsubscribed from {title}",
        preheader="You will not hear from us again.",
        unsubscribe=False,
    ),
    EmailKind.LINK: Kind(
        frozenset({SubscriberStatus.PENDING, SubscriberStatus.ACTIVE}),
        frozenset(EnrollmentStatus),
        Repeats.HOURLY,
        template="link",
        subject="Your link to unsubscribe from {title}",
        preheader="One click and you will not hear from us again.",
    ),
    # completed: not while an evergreen course's new days are still going out (it is
    # cancelled then, and queued again when they are done)
    EmailKind.AFTER_COURSE: Kind(
        _ACTIVE,
        frozenset({EnrollmentStatus.COMPLETED}),
        Repeats.ONCE,
        template="after_course",
    ),
}


def lesson_key(day_id: str, run: int) -> str:
    """The outbox key of a lesson: its day id in the first run of the course, and
    ``DAY.RUN`` after a restart, so each day goes once per run (and with a Message-ID of
    its own, which receivers do not drop as a duplicate)."""
    return day_id if run <= 1 else f"{day_id}.{run}"


def lesson_day(key: str) -> tuple[str, int]:
    """(day id, run) of a lesson's outbox key."""
    day_id, _, run = key.partition(".")
    return day_id, int(run) if run.isdigit() else 1


def row_key(kind: EmailKind, *, now: datetime) -> str:
    """The outbox key of a new email of ``kind`` (lessons have ``lesson_key``)."""
    repeats = KINDS[kind].repeats
    if repeats is Repeats.PER_DAY:
        raise ValueError("a lesson's key is lesson_key(day id, run)")
    if repeats is Repeats.ONCE:
        return f"{kind}:once"
    if repeats is Repeats.HOURLY:
        return f"{kind}:{now:%Y%m%d%H}"
    return f"{kind}:{new_uid()}"
