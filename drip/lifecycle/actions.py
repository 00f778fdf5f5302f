"""What the operator does to one subscriber, whichever door it comes through: the CLI
(``drip subscribers unsubscribe|suppress|resend-confirmation|delete|pause|resume|restart|
set-time``) and the dashboard call these same functions, so every door behaves the same.

Each runs in the caller's transaction on a Core ``Connection``; an email it sets off (a
goodbye, a confirmation) is queued in the outbox, never sent here. A subscriber is named
by address (the CLI) or by public uid (the dashboard): ``find``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import Connection, select
from sqlalchemy import delete as sql_delete
from sqlmodel import col

from drip.core.courses import Catalog
from drip.core.entries import normalize_email
from drip.core.exceptions import SubscriberNotFound
from drip.core.models import Click, Delivery, Enrollment, MailEvent, Subscriber
from drip.core.states import SubscriberStatus
from drip.lifecycle import controls, enrollment


@dataclass(frozen=True)
class Target:
    """The subscriber an action is about."""

    id: int
    uid: str
    email: str
    #: their status before the action
    status: str


def find(connection: Connection, *, email: str | None = None, uid: str | None = None) -> Target:
    """The subscriber with this address (normalised first) or public uid;
    ``SubscriberNotFound`` when there is none."""
    if (email is None) == (uid is None):
        raise ValueError("name a subscriber by email or by uid")
    query = select(
        col(Subscriber.id), col(Subscriber.uid), col(Subscriber.email), col(Subscriber.status)
    )
    if email is not None:
        query = query.where(col(Subscriber.email) == normalize_email(email))
    else:
        query = query.where(col(Subscriber.uid) == uid)
    row = connection.execute(query).one_or_none()
    if row is None:
        raise SubscriberNotFound(
            f"no subscriber with email {email!r}"
            if email is not None
            else "no such subscriber (deleted, or never here)"
        )
    subscriber_id, subscriber_uid, address, status = row
    assert subscriber_id is not None
    return Target(subscriber_id, subscriber_uid, address, status)


def unsubscribe(
    connection: Connection, *, subscriber: Target, catalog: Catalog, now: datetime
) -> bool:
    """Unsubscribe as the subscriber's own link would (``enrollment.leave``): every email
    not yet sent is cancelled, and the goodbye email of their latest course, when it has
    one, queued. False when they had already left."""
    member = _latest_member(connection, subscriber)
    if member is None:  # on no course: nothing to say goodbye for
        return enrollment.stop_subscriber(
            connection, subscriber_id=subscriber.id, status=SubscriberStatus.UNSUBSCRIBED, now=now
        )
    return enrollment.leave(connection, member=member, catalog=catalog, now=now).changed


def suppress(connection: Connection, *, subscriber: Target, reason: str, now: datetime) -> bool:
    """Never mail this address again (a dead address, or someone who asked by other means):
    every email not yet sent is cancelled, no goodbye. False when it already was."""
    return enrollment.stop_subscriber(
        connection,
        subscriber_id=subscriber.id,
        status=SubscriberStatus.SUPPRESSED,
        now=now,
        reason=reason,
    )


def resend_confirmation(
    connection: Connection,
    *,
    now: datetime,
    subscriber: Target | None = None,
    sent_before: datetime | None = None,
) -> int:
    """Queue a fresh confirmation for each course a pending subscriber has not confirmed
    yet: ``subscriber``'s, or, without one, every pending subscriber's whose last one was
    queued before ``sent_before`` (or never). Never for someone who unsubscribed or was
    suppressed; how many were queued."""
    members = enrollment.pending_members(
        connection,
        sent_before=sent_before,
        email=subscriber.email if subscriber is not None else None,
    )
    return sum(enrollment.resend_for_operator(connection, member=m, now=now) for m in members)


def delete(connection: Connection, *, subscriber: Target) -> None:
    """Erase a subscriber with their signups, enrollments, emails, clicks and bounces: the
    right to erasure. The metrics' counters keep what they had counted (no counter ever
    goes down); the funnels and gauges lose their share."""
    # Hold the subscriber and their emails (PostgreSQL; SQLite has one writer at a time):
    # an erasure of the same subscriber at the same moment waits and then finds nobody,
    # and no bounce, signup or receipt of theirs lands while they go.
    held = connection.execute(
        select(col(Subscriber.id)).where(col(Subscriber.id) == subscriber.id).with_for_update()
    ).scalar()
    if held is None:
        return  # erased meanwhile
    enrollments = select(col(Enrollment.id)).where(col(Enrollment.subscriber_id) == held)
    emails = select(col(Delivery.id)).where(col(Delivery.enrollment_id).in_(enrollments))
    connection.execute(
        select(col(Delivery.id)).where(col(Delivery.id).in_(emails)).with_for_update()
    ).all()
    # Children first, though the foreign keys would cascade: the triggers that keep the
    # tallies (drip.store.tallies) read a click's email and an email's course as it goes.
    # Signups and webhook messages go with the subscriber (they count only as events).
    for statement in (
        sql_delete(Click).where(col(Click.delivery_id).in_(emails)),
        sql_delete(MailEvent).where(col(MailEvent.subscriber_id) == held),
        sql_delete(Delivery).where(col(Delivery.enrollment_id).in_(enrollments)),
        sql_delete(Enrollment).where(col(Enrollment.subscriber_id) == held),
        sql_delete(Subscriber).where(col(Subscriber.id) == held),
    ):
        connection.execute(statement)


def control(
    connection: Connection,
    *,
    subscriber: Target,
    catalog: Catalog,
    control: controls.Control,
    now: datetime,
    days: int | None = None,
    send_at: time | None = None,
) -> controls.Changed:
    """Pause, resume, restart or move the hour of the subscriber's latest course, as her
    own page would (``drip.lifecycle.controls``)."""
    member = _latest_member(connection, subscriber)
    course = catalog.find(member.course_slug) if member is not None else None
    if member is None or course is None:
        return controls.Changed(False, refused="they are on no course drip still offers")
    return controls.apply(
        connection,
        member=member,
        course=course,
        control=control,
        now=now,
        days=days,
        send_at=send_at,
    )


def _latest_member(connection: Connection, subscriber: Target) -> enrollment.Member | None:
    """The subscriber on the course they joined last, or None when on none."""
    row = connection.execute(
        enrollment.Member.select()
        .where(col(Subscriber.id) == subscriber.id)
        .order_by(col(Enrollment.id).desc())
        .limit(1)
    ).one_or_none()
    return enrollment.Member(*row) if row is not None else None
