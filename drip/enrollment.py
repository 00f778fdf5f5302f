"""The subscriber lifecycle: sign up → confirm → lessons → unsubscribe (or suppression).

Every transition is idempotent: it checks the current status and does nothing when the
subscriber is already there, so a double click, a replayed link or a retried webhook is
harmless. Functions take a session and leave committing to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from drip import schedule
from drip.courses import Course
from drip.exceptions import InvalidToken
from drip.models import (
    PENDING_DELIVERY,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
)
from drip.subscribers import clean_name, clean_timezone, find_by_email, normalize_email


@dataclass(frozen=True)
class Consent:
    """Proof of consent kept with a signup."""

    ip: str | None = None
    user_agent: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class SignUp:
    subscriber: Subscriber
    enrollment: Enrollment
    #: a confirmation email should go out now
    send_confirmation: bool


def subscriber_zone(subscriber: Subscriber, course: Course) -> ZoneInfo:
    return zone_for(subscriber.timezone, course)


def zone_for(timezone: str | None, course: Course) -> ZoneInfo:
    """The subscriber's own IANA zone, else the course default."""
    return ZoneInfo(timezone) if timezone else course.zone


def sign_up(
    *,
    session: Session,
    course: Course,
    email: str,
    name: str | None = None,
    timezone: str | None = None,
    consent: Consent | None = None,
    confirmed: bool = False,
    confirm_resend_seconds: int = 600,
    now: datetime,
) -> SignUp:
    """Record a signup for ``course``; the outcome never reveals whether the address was known.

    ``confirmed`` (operator-added, or a course without double opt-in) enrols at once.
    A suppressed address is never revived from here.
    """
    email = normalize_email(email)
    subscriber = find_by_email(session=session, email=email)
    if subscriber is None:
        subscriber = Subscriber(email=email, created_at=now)
        session.add(subscriber)
    if subscriber.status != SubscriberStatus.ACTIVE:
        # Only an address not yet confirmed takes new details: a stranger re-submitting a
        # confirmed address must not change what its owner receives.
        subscriber.name = clean_name(name) or subscriber.name
        subscriber.timezone = clean_timezone(timezone) or subscriber.timezone
        if consent is not None:
            subscriber.consent_at = now
            subscriber.consent_ip = (consent.ip or "")[:64] or None
            subscriber.consent_user_agent = (consent.user_agent or "")[:512] or None
            subscriber.consent_source = (consent.source or "")[:512] or None
    session.flush()

    enrollment = session.exec(
        select(Enrollment).where(
            Enrollment.subscriber_id == subscriber.id, Enrollment.course_slug == course.slug
        )
    ).first()
    if enrollment is None:
        assert subscriber.id is not None  # flushed above
        enrollment = Enrollment(
            subscriber_id=subscriber.id, course_slug=course.slug, created_at=now
        )
        session.add(enrollment)
        session.flush()

    if subscriber.status == SubscriberStatus.SUPPRESSED:
        return SignUp(subscriber, enrollment, send_confirmation=False)
    if confirmed or not course.double_opt_in:
        activate(
            session=session, subscriber=subscriber, enrollment=enrollment, course=course, now=now
        )
        return SignUp(subscriber, enrollment, send_confirmation=False)
    if subscriber.status == SubscriberStatus.ACTIVE and enrollment.status in (
        EnrollmentStatus.ACTIVE,
        EnrollmentStatus.COMPLETED,
    ):
        return SignUp(subscriber, enrollment, send_confirmation=False)

    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        subscriber.status = SubscriberStatus.PENDING
    if enrollment.status == EnrollmentStatus.CANCELLED:
        enrollment.status = EnrollmentStatus.PENDING
    due = confirmation_due(subscriber=subscriber, now=now, min_seconds=confirm_resend_seconds)
    return SignUp(subscriber, enrollment, send_confirmation=due)


def confirmation_due(*, subscriber: Subscriber, now: datetime, min_seconds: int) -> bool:
    """May another confirmation email go out (at most one per ``min_seconds``)?"""
    last = subscriber.confirmation_sent_at
    return last is None or (now - last).total_seconds() >= min_seconds


def mark_confirmation_sent(*, session: Session, subscriber: Subscriber, now: datetime) -> None:
    subscriber.confirmation_sent_at = now
    session.add(subscriber)


def find_enrollment(*, session: Session, uid: str) -> tuple[Enrollment, Subscriber]:
    row = session.exec(
        select(Enrollment, Subscriber)
        .join(Subscriber, col(Subscriber.id) == Enrollment.subscriber_id)
        .where(Enrollment.uid == uid)
    ).first()
    if row is None:
        raise InvalidToken("this link is not valid")
    return row


def confirm(
    *, session: Session, uid: str, course: Course, issued_at: datetime, now: datetime
) -> Enrollment:
    """Confirm the enrollment ``uid`` from a confirmation link issued at ``issued_at``.

    A link older than the subscriber's last unsubscribe is refused: leaving wins over an
    old email.
    """
    enrollment, subscriber = find_enrollment(session=session, uid=uid)
    if subscriber.status == SubscriberStatus.SUPPRESSED:
        raise InvalidToken("this address cannot receive email from us")
    left = subscriber.unsubscribed_at
    if left is not None and left.replace(microsecond=0) > issued_at:  # tokens count seconds
        raise InvalidToken("this link was sent before you unsubscribed; please sign up again")
    activate(session=session, subscriber=subscriber, enrollment=enrollment, course=course, now=now)
    return enrollment


def activate(
    *,
    session: Session,
    subscriber: Subscriber,
    enrollment: Enrollment,
    course: Course,
    now: datetime,
) -> bool:
    """Make the subscriber active and (re)start the enrollment; False when nothing changed."""
    changed = False
    if subscriber.status != SubscriberStatus.ACTIVE:
        subscriber.status = SubscriberStatus.ACTIVE
        subscriber.confirmed_at = now
        session.add(subscriber)
        changed = True
    if enrollment.status in (EnrollmentStatus.PENDING, EnrollmentStatus.CANCELLED):
        enrollment.status = EnrollmentStatus.ACTIVE
        enrollment.started_at = enrollment.started_at or now
        enrollment.cancelled_at = None
        session.add(enrollment)
        session.flush()
        schedule_next(
            session=session,
            enrollment=enrollment,
            course=course,
            zone=subscriber_zone(subscriber, course),
            now=now,
            resuming=True,
        )
        changed = True
    return changed


def schedule_next(
    *,
    session: Session,
    enrollment: Enrollment,
    course: Course,
    zone: ZoneInfo,
    now: datetime,
    resuming: bool = False,
) -> Delivery | None:
    """Queue the next lesson of an enrollment (see ``schedule.plan_next``), or complete it."""
    rows = session.exec(select(Delivery).where(Delivery.enrollment_id == enrollment.id)).all()
    if any(row.status in PENDING_DELIVERY for row in rows):
        return None  # one lesson in the queue at a time
    plan = schedule.plan_next(
        day_ids=[day.id for day in course.days],
        done={row.day_id for row in rows if row.status != DeliveryStatus.CANCELLED},
        last_sent_at=max((row.sent_at for row in rows if row.sent_at), default=None),
        resuming=resuming,
        now=now,
        zone=zone,
        send_at=course.send_at,
        weekdays=course.weekdays,
    )
    if plan.day_id is None or plan.due_at is None:
        enrollment.status = EnrollmentStatus.COMPLETED
        enrollment.completed_at = now
        session.add(enrollment)
        return None
    delivery = next((row for row in rows if row.day_id == plan.day_id), None)
    if delivery is None:
        assert enrollment.id is not None  # a stored enrollment
        delivery = Delivery(
            enrollment_id=enrollment.id, day_id=plan.day_id, due_at=plan.due_at, created_at=now
        )
    else:  # a lesson cancelled by an unsubscribe, now resumed
        delivery.status = DeliveryStatus.SCHEDULED
        delivery.due_at = plan.due_at
        delivery.attempts = 0
        delivery.cancelled_at = None
        delivery.claimed_until = None
    session.add(delivery)
    session.flush()
    return delivery


def unsubscribe(*, session: Session, uid: str, now: datetime) -> tuple[Subscriber, bool]:
    """Unsubscribe the owner of enrollment ``uid`` from everything, at once.

    Cancels every lesson not yet sent, including one a worker has claimed: the engine
    re-checks right before handing a message to SMTP. Returns (subscriber, changed).
    """
    _, subscriber = find_enrollment(session=session, uid=uid)
    return subscriber, stop_subscriber(
        session=session, subscriber=subscriber, status=SubscriberStatus.UNSUBSCRIBED, now=now
    )


def stop_subscriber(
    *,
    session: Session,
    subscriber: Subscriber,
    status: SubscriberStatus,
    now: datetime,
    reason: str | None = None,
) -> bool:
    """Move a subscriber to unsubscribed/suppressed and cancel what is pending."""
    if subscriber.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED):
        if status == SubscriberStatus.SUPPRESSED and subscriber.status != status:
            subscriber.status = status
            subscriber.suppressed_at, subscriber.suppressed_reason = now, reason
            session.add(subscriber)
        return False
    subscriber.status = status
    if status == SubscriberStatus.SUPPRESSED:
        subscriber.suppressed_at, subscriber.suppressed_reason = now, reason
    else:
        subscriber.unsubscribed_at = now
    session.add(subscriber)
    enrollment_ids = select(Enrollment.id).where(Enrollment.subscriber_id == subscriber.id)
    session.execute(
        update(Delivery)
        .where(
            col(Delivery.enrollment_id).in_(enrollment_ids),
            col(Delivery.status).in_(PENDING_DELIVERY),
        )
        .values(status=DeliveryStatus.CANCELLED, cancelled_at=now, claimed_until=None)
    )
    session.execute(
        update(Enrollment)
        .where(
            col(Enrollment.subscriber_id) == subscriber.id,
            col(Enrollment.status).in_((EnrollmentStatus.PENDING, EnrollmentStatus.ACTIVE)),
        )
        .values(status=EnrollmentStatus.CANCELLED, cancelled_at=now)
    )
    return True


def counts(*, session: Session) -> dict[str, dict[str, int]]:
    """Row counts by status, for ``drip stats``."""
    result: dict[str, dict[str, int]] = {}
    for name, model in (
        ("subscribers", Subscriber),
        ("enrollments", Enrollment),
        ("deliveries", Delivery),
    ):
        rows = session.exec(select(model.status, func.count()).group_by(model.status)).all()
        result[name] = {str(status): int(count) for status, count in rows}
    return result
