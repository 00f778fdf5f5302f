"""The subscriber lifecycle after signup: confirm → lessons → unsubscribe (or suppression).

Every transition is idempotent and guarded by the current status, so a double click, a
replayed link or a retried webhook is harmless. Functions run in the caller's
transaction on a Core ``Connection``; emails they set off are queued in the outbox in
that same transaction, so a crash either keeps both or neither.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    Dialect,
    String,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlmodel import col

from drip.core import schedule
from drip.core.courses import Catalog, Course
from drip.core.exceptions import InvalidToken, StaleToken
from drip.core.models import Delivery, Enrollment, Signup, Subscriber, UTCDateTime
from drip.core.schedule import NextLesson, Pace
from drip.core.states import EmailKind, EnrollmentStatus, EventType, SubscriberStatus
from drip.outbox import deliveries, webhooks
from drip.outbox.kinds import row_key
from drip.outbox.webhooks import Event
from drip.store.statements import Compiled, Prepared


class Member(NamedTuple):
    """A subscriber on one course: the fields the lifecycle rules read (a row of
    ``select()``)."""

    subscriber_id: int
    email: str
    name: str
    timezone: str | None
    status: str
    unsubscribed_at: datetime | None
    confirmation_sent_at: datetime | None
    enrollment_id: int
    enrollment_uid: str
    enrollment_status: str
    course_slug: str
    #: the enrollment's run of the course, own hour (``HH:MM``) and pause
    run: int
    send_at: str | None
    paused_until: datetime | None

    @classmethod
    @functools.cache
    def columns(cls) -> tuple[Any, ...]:
        return (
            col(Subscriber.id),
            col(Subscriber.email),
            col(Subscriber.name),
            col(Subscriber.timezone),
            col(Subscriber.status),
            col(Subscriber.unsubscribed_at),
            col(Subscriber.confirmation_sent_at),
            col(Enrollment.id),
            col(Enrollment.uid),
            col(Enrollment.status),
            col(Enrollment.course_slug),
            col(Enrollment.run),
            col(Enrollment.send_at),
            col(Enrollment.paused_until),
        )

    def pace(self, course: Course, *, timezone: str | None = None) -> Pace:
        """When this enrollment's lessons go (``timezone``: one about to be applied)."""
        return course.pace(
            timezone=timezone or self.timezone,
            send_at=self.send_at,
            run=self.run,
            paused_until=self.paused_until,
        )

    @classmethod
    def select(cls) -> Any:
        return select(*cls.columns()).join(
            Enrollment, col(Enrollment.subscriber_id) == col(Subscriber.id)
        )


class SignupDetails(NamedTuple):
    """What one signup said: applied to the subscriber when it is confirmed (a row of
    ``columns()``)."""

    id: int
    name: str
    timezone: str | None
    created_at: datetime
    ip: str | None
    user_agent: str | None
    source: str | None

    @classmethod
    @functools.cache
    def columns(cls) -> tuple[Any, ...]:
        """The ``Signup`` columns the fields are read from, in order."""
        return (
            col(Signup.id),
            col(Signup.name),
            col(Signup.timezone),
            col(Signup.created_at),
            col(Signup.ip),
            col(Signup.user_agent),
            col(Signup.source),
        )


def find_member(connection: Connection, *, enrollment_uid: str) -> Member:
    row = connection.execute(
        Member.select().where(col(Enrollment.uid) == enrollment_uid)
    ).one_or_none()
    if row is None:
        raise InvalidToken("this link is not valid")
    return Member(*row)


def find_signup(connection: Connection, *, signup_uid: str) -> tuple[Member, SignupDetails]:
    """A signup with its subscriber and their enrollment in the signup's course."""
    row = connection.execute(
        select(*Member.columns(), *SignupDetails.columns())
        .select_from(Signup)
        .join(Subscriber, col(Subscriber.id) == Signup.subscriber_id)
        .join(
            Enrollment,
            (col(Enrollment.subscriber_id) == col(Subscriber.id))
            & (col(Enrollment.course_slug) == col(Signup.course_slug)),
        )
        .where(col(Signup.uid) == signup_uid)
    ).one_or_none()
    if row is None:
        raise InvalidToken("this link is not valid")
    count = len(Member.columns())
    return Member(*row[:count]), SignupDetails(*row[count:])


def latest_signup_id(connection: Connection, member: Member) -> int | None:
    """The member's most recent signup for their course (what a fresh link confirms)."""
    latest: int | None = connection.execute(
        select(func.max(col(Signup.id))).where(
            col(Signup.subscriber_id) == member.subscriber_id,
            col(Signup.course_slug) == member.course_slug,
        )
    ).scalar()
    return latest


# -- confirming -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Confirmed:
    course: Course
    #: False when the link had already been used (nothing changed)
    changed: bool
    #: the lesson queued next and when, or None when one was already queued
    next_lesson: NextLesson | None
    zone: ZoneInfo
    #: the enrollment confirmed (its day 1 can be sent at once)
    enrollment_id: int


def confirm(
    connection: Connection,
    *,
    signup_uid: str,
    issued_at: datetime,
    catalog: Catalog,
    now: datetime,
) -> Confirmed:
    """Confirm the signup a confirmation link names (the button's POST, never a GET).

    Applies that signup's name, time zone and proof of consent, enrols, and queues the
    next lesson (day 1 at once for a new subscriber). A link issued before the
    subscriber's last unsubscribe is refused (``StaleToken``): leaving wins over an old
    email, and the page offers a fresh link instead.
    """
    member, signup = find_signup(connection, signup_uid=signup_uid)
    course = catalog.find(member.course_slug)
    if course is None:
        raise InvalidToken("this course is no longer offered")
    if member.status == SubscriberStatus.SUPPRESSED:
        raise InvalidToken("this address cannot receive email from us")
    left = member.unsubscribed_at
    if left is not None and left.replace(microsecond=0) > issued_at:  # tokens count seconds
        raise StaleToken("this link was sent before you unsubscribed, so it no longer works")
    changed, plan = activate(connection, member=member, signup=signup, course=course, now=now)
    zone = course.zone_for(_zone_after(member, signup))
    return Confirmed(course, changed, plan, zone, member.enrollment_id)


def _zone_after(member: Member, signup: SignupDetails) -> str | None:
    return signup.timezone or member.timezone


def activate(
    connection: Connection,
    *,
    member: Member,
    signup: SignupDetails,
    course: Course,
    now: datetime,
) -> tuple[bool, NextLesson | None]:
    """Make the subscriber active and (re)start the enrollment, applying ``signup``'s
    details; returns (whether anything changed, the lesson queued next)."""
    [result] = activate_many(connection, [(member, signup)], course=course, now=now)
    return result


class _Statements:
    """Activation's statements run once per member, compiled once per kind of database."""

    def __init__(self, dialect: Dialect) -> None:
        #: the subscriber takes the signup's proof of consent, name and zone (a blank
        #: name or zone keeps theirs)
        self.consent = Prepared(
            update(Subscriber)
            .where(col(Subscriber.id) == bindparam("b_id"))
            .values(
                consent_at=bindparam("b_at"),
                consent_ip=bindparam("b_ip"),
                consent_user_agent=bindparam("b_agent"),
                consent_source=bindparam("b_source"),
                name=func.coalesce(func.nullif(bindparam("b_name"), ""), col(Subscriber.name)),
                timezone=func.coalesce(bindparam("b_zone"), col(Subscriber.timezone)),
            ),
            dialect,
        )


_statements = Compiled(_Statements)


def activate_many(
    connection: Connection,
    members: Sequence[tuple[Member, SignupDetails]],
    *,
    course: Course,
    now: datetime,
) -> list[tuple[bool, NextLesson | None]]:
    """``activate`` for many members of one course at once (distinct enrollments).

    Each subscriber becomes active and takes the name, time zone and proof of consent of
    the signup being confirmed (a blank name or zone keeps theirs); each enrollment not
    running starts (or resumes where it stopped) with its next lesson queued, and the
    course's welcome email when it has one.
    """
    if not members:
        return []
    result = connection.execute(
        select(col(Signup.id)).where(
            col(Signup.id).in_([s.id for _, s in members]),
            col(Signup.confirmed_at).is_(None),
        )
    )
    newly_confirmed: set[int] = set(result.scalars().all())  # type: ignore[arg-type]
    connection.execute(
        update(Signup).where(col(Signup.id).in_(newly_confirmed)).values(confirmed_at=now)
    )
    _statements(connection.dialect).consent.executemany(
        connection,
        (
            {
                "b_id": m.subscriber_id,
                "b_at": s.created_at,
                "b_ip": s.ip,
                "b_agent": s.user_agent,
                "b_source": s.source,
                "b_name": s.name,
                "b_zone": s.timezone,
            }
            for m, s in members
        ),
    )
    waking = [m.subscriber_id for m, _ in members if m.status != SubscriberStatus.ACTIVE]
    if waking:
        connection.execute(
            update(Subscriber)
            .where(
                col(Subscriber.id).in_(waking), col(Subscriber.status) != SubscriberStatus.ACTIVE
            )
            .values(status=SubscriberStatus.ACTIVE, confirmed_at=now)
        )
    starting = [
        (m, s)
        for m, s in members
        if m.enrollment_status in (EnrollmentStatus.PENDING, EnrollmentStatus.CANCELLED)
    ]
    if starting:
        connection.execute(
            update(Enrollment)
            .where(col(Enrollment.id).in_([m.enrollment_id for m, _ in starting]))
            .values(
                status=EnrollmentStatus.ACTIVE,
                # typed as the column (converted to UTC), not as coalesce's argument
                started_at=func.coalesce(col(Enrollment.started_at), literal(now, UTCDateTime())),
                cancelled_at=None,
                left_after=None,  # back: no longer someone who left
            )
        )
    histories = deliveries.lesson_histories(connection, [m.enrollment_id for m, _ in starting])
    plans = start_many(
        connection,
        [(m, _zone_after(m, s)) for m, s in starting],
        histories=histories,
        course=course,
        now=now,
    )
    return [
        (
            member.enrollment_id in plans
            or member.status != SubscriberStatus.ACTIVE
            or signup.id in newly_confirmed,
            plans.get(member.enrollment_id),
        )
        for member, signup in members
    ]


def start_many(
    connection: Connection,
    starting: Sequence[tuple[Member, str | None]],
    *,
    histories: Mapping[int, tuple[dict[str, str], datetime | None]],
    course: Course,
    now: datetime,
) -> dict[int, NextLesson | None]:
    """What (re)starting enrollments of ``course`` queues, once each is active: its next
    lesson (``histories``: ``deliveries.lesson_histories``; the zone beside each member:
    the one their signup leaves them with), the course's welcome email when it has one,
    and the ``subscriber.confirmed`` events. The lesson planned, by enrollment id."""
    plans: dict[int, NextLesson | None] = {}
    emails: list[dict[str, Any]] = []  # queued together, in multi-row statements
    for member, zone in starting:
        history, last_sent = histories.get(member.enrollment_id, ({}, None))
        plans[member.enrollment_id] = deliveries.queue_next_lesson(
            connection,
            enrollment_id=member.enrollment_id,
            course=course,
            pace=member.pace(course, timezone=zone),
            now=now,
            history=history,
            last_sent_at=last_sent,
            resuming=True,
            batch=emails,
        )
        if course.welcome_email:
            emails.append(
                {
                    "enrollment_id": member.enrollment_id,
                    "kind": EmailKind.WELCOME,
                    "key": row_key(EmailKind.WELCOME, now=now),
                    "due_at": now,
                    "now": now,
                }
            )
    deliveries.queue_many(connection, emails)
    webhooks.emit_many(
        connection,
        [
            Event(EventType.SUBSCRIBER_CONFIRMED, enrollment_id=member.enrollment_id)
            for member, _ in starting
        ],
        now=now,
    )
    return plans


# -- evergreen courses ----------------------------------------------------------------------

#: enrollments restarted per transaction (short write locks however many completed)
EVERGREEN_CHUNK = 500


def extend_evergreen(
    connection: Connection, *, course: Course, now: datetime, limit: int = EVERGREEN_CHUNK
) -> int:
    """Restart up to ``limit`` completed enrollments of an ``evergreen`` course that has
    gained days at its end since they completed; how many (call again while it returns
    ``limit``). Each one's first new day is queued for the next ``send_at`` in the
    subscriber's zone, one a day as before. Someone who unsubscribed after completing
    is not restarted, even if another course made them active again.

    An enrollment is behind when it has no row for the course's last day: completing
    takes a row for every day, so in the steady state each probe of the unique
    (enrollment, day) index finds one.
    """
    if not course.evergreen:
        return 0
    behind = list(
        connection.execute(
            select(
                col(Enrollment.id),
                col(Subscriber.timezone),
                col(Enrollment.run),
                col(Enrollment.send_at),
                col(Enrollment.paused_until),
            )
            .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
            .where(
                col(Enrollment.course_slug) == course.slug,
                col(Enrollment.status) == EnrollmentStatus.COMPLETED,
                col(Subscriber.status) == SubscriberStatus.ACTIVE,
                or_(
                    col(Subscriber.unsubscribed_at).is_(None),
                    col(Subscriber.unsubscribed_at) < col(Enrollment.completed_at),
                ),
                ~exists().where(  # the last day's row, in the enrollment's run
                    col(Delivery.enrollment_id) == col(Enrollment.id),
                    col(Delivery.key)
                    == case(
                        (col(Enrollment.run) <= 1, course.days[-1].id),
                        else_=course.days[-1].id + "." + cast(col(Enrollment.run), String),
                    ),
                ),
            )
            .order_by(col(Enrollment.id))
            .limit(limit)
        )
    )
    if not behind:
        return 0
    paces = {
        enrollment_id: course.pace(
            timezone=zone, send_at=send_at, run=run, paused_until=paused_until
        )
        for enrollment_id, zone, run, send_at, paused_until in behind
    }
    restarted: list[int] = list(
        connection.execute(  # type: ignore[arg-type]
            update(Enrollment)
            .where(
                col(Enrollment.id).in_(paces),
                col(Enrollment.status) == EnrollmentStatus.COMPLETED,  # not if restarted meanwhile
            )
            .values(status=EnrollmentStatus.ACTIVE, completed_at=None)
            .returning(col(Enrollment.id))
        ).scalars()
    )
    histories = deliveries.lesson_histories(connection, restarted)
    for enrollment_id in restarted:
        history, last_sent = histories.get(enrollment_id, ({}, None))
        pace = paces[enrollment_id]
        deliveries.queue_next_lesson(
            connection,
            enrollment_id=enrollment_id,
            course=course,
            pace=pace,
            now=now,
            history=history,
            last_sent_at=last_sent,
            not_before=schedule.next_slot(
                now=now, zone=pace.zone, send_at=pace.send_at, weekdays=pace.weekdays
            ),
        )
    return len(behind)


# -- confirmation emails --------------------------------------------------------------------


def queue_confirmations(
    connection: Connection, members: Sequence[tuple[Member, int]], *, now: datetime
) -> None:
    """Queue a confirmation email for each (member, signup id: the signup its link will
    confirm) and note when, so resends are spaced out."""
    if not members:
        return
    deliveries.queue_many(
        connection,
        [
            {
                "enrollment_id": member.enrollment_id,
                "kind": EmailKind.CONFIRM,
                "key": row_key(EmailKind.CONFIRM, now=now),
                "signup_id": signup_id,
                "due_at": now,
                "now": now,
            }
            for member, signup_id in members
        ],
    )
    connection.execute(
        update(Subscriber)
        .where(col(Subscriber.id).in_({member.subscriber_id for member, _ in members}))
        .values(confirmation_sent_at=now)
    )


def may_resend(last: datetime | None, *, now: datetime, gap_seconds: float) -> bool:
    """May another confirmation go to an address whose last one was queued at ``last``
    (None: never)? At most one per ``gap_seconds``."""
    return last is None or (now - last).total_seconds() >= gap_seconds


def awaiting_confirmation(member: Member) -> bool:
    """Would confirming change anything: an enrollment not running, an address not barred."""
    return member.status != SubscriberStatus.SUPPRESSED and member.enrollment_status in (
        EnrollmentStatus.PENDING,
        EnrollmentStatus.CANCELLED,
    )


def resend_for_link(
    connection: Connection, *, signup_uid: str, now: datetime, gap_seconds: float
) -> None:
    """An expired or stale link's "send me a new one": queue a fresh confirmation for the
    signup it names, if it still waits for one and the resend gap allows (the page says
    the same either way).

    A signup made before the subscriber's last unsubscribe gets nothing: only a new
    signup can bring back someone who left.
    """
    member, signup = find_signup(connection, signup_uid=signup_uid)
    left = member.unsubscribed_at
    if (
        not awaiting_confirmation(member)
        or (left is not None and signup.created_at < left)
        or not may_resend(member.confirmation_sent_at, now=now, gap_seconds=gap_seconds)
    ):
        return
    queue_confirmations(connection, [(member, signup.id)], now=now)


def resend_for_operator(connection: Connection, *, member: Member, now: datetime) -> bool:
    """``drip subscribers resend-confirmation``: a fresh confirmation for a pending member
    (never for someone who unsubscribed or was suppressed); True if queued."""
    if member.status != SubscriberStatus.PENDING or not awaiting_confirmation(member):
        return False
    signup_id = latest_signup_id(connection, member)
    if signup_id is None:
        return False
    queue_confirmations(connection, [(member, signup_id)], now=now)
    return True


def pending_members(
    connection: Connection, *, sent_before: datetime | None, email: str | None = None
) -> list[Member]:
    """Pending subscribers' enrollments awaiting confirmation, optionally only those whose
    last confirmation was queued before ``sent_before`` (or never)."""
    query = Member.select().where(
        col(Subscriber.status) == SubscriberStatus.PENDING,
        col(Enrollment.status) == EnrollmentStatus.PENDING,
    )
    if email is not None:
        query = query.where(col(Subscriber.email) == email)
    if sent_before is not None:
        query = query.where(
            col(Subscriber.confirmation_sent_at).is_(None)
            | (col(Subscriber.confirmation_sent_at) < sent_before)
        )
    return [Member(*row) for row in connection.execute(query.order_by(col(Subscriber.id)))]


# -- leaving --------------------------------------------------------------------------------


def send_unsubscribe_link(connection: Connection, *, email: str, now: datetime) -> None:
    """Someone typed their address on the page of a broken unsubscribe link: queue a fresh
    link to that address, if it is on a course (at most one an hour). Nothing tells the
    person typing whether it was."""
    member = connection.execute(
        Member.select()
        .where(
            col(Subscriber.email) == email,
            col(Subscriber.status).in_((SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)),
        )
        .order_by(col(Enrollment.id).desc())
        .limit(1)
    ).one_or_none()
    if member is not None:
        deliveries.queue_email(
            connection, enrollment_id=Member(*member).enrollment_id, kind=EmailKind.LINK, now=now
        )


@dataclass(frozen=True)
class Unsubscribed:
    course: Course | None
    #: False when the subscriber had already left
    changed: bool


def unsubscribe(
    connection: Connection, *, enrollment_uid: str, catalog: Catalog, now: datetime
) -> Unsubscribed:
    """The subscriber's own unsubscribe link (or mailto): ``leave`` for the enrollment it
    names."""
    return leave(
        connection,
        member=find_member(connection, enrollment_uid=enrollment_uid),
        catalog=catalog,
        now=now,
    )


def leave(
    connection: Connection, *, member: Member, catalog: Catalog, now: datetime
) -> Unsubscribed:
    """Unsubscribe ``member``'s subscriber from everything, at once: every door (the link,
    a mailto, the operator's CLI and dashboard) comes here.

    Cancels every email not yet sent, including one a worker has claimed: the engine
    re-checks right before SMTP. The goodbye email of ``member``'s course, when it has
    one, is queued after the cancellation.
    """
    changed = stop_subscriber(
        connection,
        subscriber_id=member.subscriber_id,
        status=SubscriberStatus.UNSUBSCRIBED,
        now=now,
    )
    course = catalog.find(member.course_slug)
    if changed and course is not None and course.goodbye_email:
        deliveries.queue_email(
            connection, enrollment_id=member.enrollment_id, kind=EmailKind.GOODBYE, now=now
        )
    return Unsubscribed(course, changed)


def stop_subscriber(
    connection: Connection,
    *,
    subscriber_id: int,
    status: SubscriberStatus,
    now: datetime,
    reason: str | None = None,
) -> bool:
    """Move a subscriber to unsubscribed or suppressed and cancel every email not yet
    sent (even when already there: a confirmation queued since is cancelled too).
    Returns whether the status changed."""
    # Leaving again (a mail client's one-click and the button, say) must not cancel the
    # goodbye the first unsubscribe queued; a suppressed address gets nothing at all.
    keep = (EmailKind.GOODBYE,) if status == SubscriberStatus.UNSUBSCRIBED else ()
    deliveries.cancel_pending(connection, subscriber_id=subscriber_id, now=now, keep=keep)
    left: dict[str, object] = {}
    if status == SubscriberStatus.UNSUBSCRIBED:  # the funnel's "left after day N"
        left = {"left_after": deliveries.last_lesson_key(Enrollment.id)}
    connection.execute(
        update(Enrollment)
        .where(
            col(Enrollment.subscriber_id) == subscriber_id,
            col(Enrollment.status).in_((EnrollmentStatus.PENDING, EnrollmentStatus.ACTIVE)),
        )
        .values(status=EnrollmentStatus.CANCELLED, cancelled_at=now, **left)
    )
    if status == SubscriberStatus.SUPPRESSED:
        values: dict[str, object] = {"suppressed_at": now, "suppressed_reason": reason}
        leaving: tuple[SubscriberStatus, ...] = (SubscriberStatus.SUPPRESSED,)
    else:
        values = {"unsubscribed_at": now}
        leaving = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED)
    result = connection.execute(
        update(Subscriber)
        .where(col(Subscriber.id) == subscriber_id, col(Subscriber.status).not_in(leaving))
        .values(status=status, **values)
    )
    changed = bool(result.rowcount)
    if changed and status == SubscriberStatus.UNSUBSCRIBED:
        webhooks.emit(
            connection, EventType.SUBSCRIBER_UNSUBSCRIBED, subscriber_id=subscriber_id, now=now
        )
    return changed
