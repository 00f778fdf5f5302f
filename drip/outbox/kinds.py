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
    PER_DAY = "per-day"  #: a lesson: its key is its day's id (day ids never contain a colon)


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


def row_key(kind: EmailKind, *, now: datetime, day_id: str | None = None) -> str:
    """The outbox key of a new email of ``kind`` (a lesson's: its ``day_id``)."""
    repeats = KINDS[kind].repeats
    if repeats is Repeats.PER_DAY:
        if day_id is None:
            raise ValueError("a lesson's key is its day id")
        return day_id
    if repeats is Repeats.ONCE:
        return f"{kind}:once"
    if repeats is Repeats.HOURLY:
        return f"{kind}:{now:%Y%m%d%H}"
    return f"{kind}:{new_uid()}"
