"""Signing up: the one function the form, the webhooks, ``subscribers add`` and ``import`` call.

Every signup is stored as it was posted (a ``Signup`` row: details and where they came
from). A new address becomes a pending subscriber with those details; a known address
keeps its own until its owner confirms a signup, so a stranger re-posting the form
rewrites nothing. What happens next is ``decide``'s table:

============================================  =========================================
the address                                   outcome
============================================  =========================================
suppressed (the mail server refused it)       nothing
already receiving (or finished) this course   nothing
left (unsubscribed), added by the operator    nothing: only they can come back
added with ``--confirmed`` by the operator    enrolled at once
course without double opt-in (never left)     enrolled at once
a confirmation queued within the resend gap   nothing more (the queued one will do)
anyone else                                   a confirmation email is queued
============================================  =========================================

A person's own signup does the same database work whatever the address's state (the
statements are the same; only whether a row is inserted differs), so response times
do not tell a known address from a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col

from drip.courses import Course
from drip.enrollment import (
    Member,
    SignupDetails,
    activate_many,
    queue_confirmations,
)
from drip.models import (
    Enrollment,
    EnrollmentStatus,
    Signup,
    Subscriber,
    SubscriberStatus,
    new_uid,
)
from drip.subscribers import clean_name, clean_timezone, normalize_email


class Action(StrEnum):
    CONFIRM = "confirm"  #: a confirmation email was queued
    WAIT = "wait"  #: one was queued within the resend gap: no second one yet
    ACTIVATE = "activate"  #: enrolled at once
    NOTHING = "nothing"  #: already receiving the course, or barred from it


@dataclass(frozen=True)
class Entry:
    """One person's signup details, checked and cleaned."""

    email: str
    name: str = ""
    timezone: str | None = None

    @classmethod
    def clean(cls, *, email: str, name: str | None = None, timezone: str | None = None) -> Entry:
        """Normalise the address (``InvalidSubscriber`` names what is wrong), clean the
        name; an unknown time zone becomes None (the course default)."""
        return cls(normalize_email(email), clean_name(name), clean_timezone(timezone))


@dataclass(frozen=True)
class Consent:
    """Where a signup came from: kept as the proof of consent."""

    source: str
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class Outcome:
    email: str
    action: Action
    #: the subscriber's status before this signup (None: a new address)
    was: str | None


def decide(
    *,
    status: str | None,
    enrollment_status: str,
    last_confirmation: datetime | None,
    by_operator: bool,
    confirmed: bool,
    double_opt_in: bool,
    resend_gap_seconds: float,
    now: datetime,
) -> Action:
    """What a signup leads to (the module docstring's table). ``status`` None: new."""
    if status == SubscriberStatus.SUPPRESSED:
        return Action.NOTHING
    if status == SubscriberStatus.ACTIVE and enrollment_status in (
        EnrollmentStatus.ACTIVE,
        EnrollmentStatus.COMPLETED,
    ):
        return Action.NOTHING
    if by_operator and status == SubscriberStatus.UNSUBSCRIBED:
        return Action.NOTHING
    if confirmed or (not double_opt_in and status != SubscriberStatus.UNSUBSCRIBED):
        return Action.ACTIVATE
    if last_confirmation is not None and (now - last_confirmation).total_seconds() < (
        resend_gap_seconds
    ):
        return Action.WAIT
    return Action.CONFIRM


def sign_up(
    connection: Connection,
    *,
    course: Course,
    entries: Sequence[Entry],
    consent: Consent,
    now: datetime,
    by_operator: bool = False,
    confirmed: bool = False,
    resend_gap_seconds: float = 600,
) -> list[Outcome]:
    """Sign ``entries`` (distinct addresses) up for ``course`` in the caller's transaction.

    ``by_operator``: added from the CLI, never bringing back anyone who left;
    ``confirmed`` (operator only): the operator holds their consent, enrol at once.
    """
    if confirmed and not by_operator:
        raise ValueError("only the operator can sign people up as confirmed")
    if not entries:
        return []
    emails = [entry.email for entry in entries]
    if len(set(emails)) != len(emails):
        raise ValueError("each address may appear once per call")
    known = _statuses(connection, emails)
    upsert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    connection.execute(
        upsert(Subscriber).on_conflict_do_nothing(index_elements=["email"]),
        [
            {
                "uid": new_uid(),
                "email": entry.email,
                "name": entry.name,
                "timezone": entry.timezone,
                "status": SubscriberStatus.PENDING,
                "created_at": now,
                "consent_at": now,
                "consent_ip": consent.ip,
                "consent_user_agent": consent.user_agent,
                "consent_source": consent.source,
            }
            for entry in entries
        ],
    )
    ids: dict[str, int] = dict(
        connection.execute(  # type: ignore[arg-type]
            select(col(Subscriber.email), col(Subscriber.id)).where(
                col(Subscriber.email).in_(emails)
            )
        ).all()
    )
    connection.execute(
        upsert(Enrollment).on_conflict_do_nothing(index_elements=["subscriber_id", "course_slug"]),
        [
            {
                "uid": new_uid(),
                "subscriber_id": ids[email],
                "course_slug": course.slug,
                "status": EnrollmentStatus.PENDING,
                "created_at": now,
            }
            for email in emails
        ],
    )
    members = {
        member.email: member
        for member in (
            Member(*row)
            for row in connection.execute(
                Member.select().where(
                    col(Subscriber.email).in_(emails), col(Enrollment.course_slug) == course.slug
                )
            )
        )
    }
    signups = _store_signups(connection, course, entries, consent, ids, now)

    outcomes, to_confirm, to_activate = [], [], []
    for entry, signup in zip(entries, signups, strict=True):
        member = members[entry.email]
        action = decide(
            status=known.get(entry.email),
            enrollment_status=member.enrollment_status,
            last_confirmation=member.confirmation_sent_at,
            by_operator=by_operator,
            confirmed=confirmed,
            double_opt_in=course.double_opt_in,
            resend_gap_seconds=resend_gap_seconds,
            now=now,
        )
        if action == Action.CONFIRM:
            to_confirm.append((member, signup))
        elif action == Action.ACTIVATE:
            to_activate.append((member, signup))
        outcomes.append(Outcome(entry.email, action, known.get(entry.email)))
    queue_confirmations(connection, to_confirm, now=now)
    activate_many(connection, to_activate, course=course, now=now)
    return outcomes


def _statuses(connection: Connection, emails: list[str]) -> dict[str, str]:
    """The current status of each address already known."""
    return dict(
        connection.execute(
            select(col(Subscriber.email), col(Subscriber.status)).where(
                col(Subscriber.email).in_(emails)
            )
        ).all()
    )


def _store_signups(
    connection: Connection,
    course: Course,
    entries: Sequence[Entry],
    consent: Consent,
    ids: dict[str, int],
    now: datetime,
) -> list[SignupDetails]:
    rows: list[dict[str, Any]] = [
        {
            "uid": new_uid(),
            "subscriber_id": ids[entry.email],
            "course_slug": course.slug,
            "name": entry.name,
            "timezone": entry.timezone,
            "created_at": now,
            "ip": consent.ip,
            "user_agent": consent.user_agent,
            "source": consent.source,
        }
        for entry in entries
    ]
    stored: Sequence[Any] = connection.execute(
        insert(Signup).returning(col(Signup.id), col(Signup.uid), sort_by_parameter_order=True),
        rows,
    ).all()
    return [
        SignupDetails(
            id=signup_id,
            uid=uid,
            name=row["name"],
            timezone=row["timezone"],
            created_at=now,
            ip=consent.ip,
            user_agent=consent.user_agent,
            source=consent.source,
        )
        for (signup_id, uid), row in zip(stored, rows, strict=True)
    ]
