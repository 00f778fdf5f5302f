"""Signing up: the rules every door shares (the form and webhooks, ``subscribers add`` and
``import``).

Every signup is stored as it was posted (a ``Signup`` row: details and where they came
from). The web process does only that (``record``: one small insert, whatever the
address's state, so neither the work nor its time tells a known address from a new
one) and answers; ``process_recorded``, run by the web process's prompt sender and by every
``send-due``, then processes what was recorded. The CLI records and processes at once
(``sign_up``). Processing makes a new address a pending subscriber with those details; a
known address keeps its own until its owner confirms a signup, so a stranger re-posting
the form rewrites nothing. What happens next is ``decide``'s table:

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

An operator's signups that the table enrols at once (an import with ``--confirmed``)
write the addresses drip does not know yet in final form, a batch at a time, as
activation would leave them (``_enrol_new``); known ones go through the table.

"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    Connection,
    Dialect,
    String,
    bindparam,
    insert,
    literal,
    select,
    update,
)
from sqlmodel import col

from drip.core.courses import Catalog, Course
from drip.core.entries import Entry
from drip.core.models import UNPROCESSED, Enrollment, Signup, Subscriber, UTCDateTime, new_uids
from drip.core.states import EnrollmentStatus, EventType, SubscriberStatus
from drip.lifecycle.enrollment import (
    Member,
    SignupDetails,
    activate_many,
    may_resend,
    queue_confirmations,
    start_many,
)
from drip.outbox import webhooks
from drip.outbox.webhooks import Event
from drip.store import tallies
from drip.store.statements import Compiled, Prepared, analyze_if_grown, insert_for, new_ids


class Action(StrEnum):
    CONFIRM = "confirm"  #: a confirmation email was queued
    WAIT = "wait"  #: one was queued within the resend gap: no second one yet
    ACTIVATE = "activate"  #: enrolled at once
    NOTHING = "nothing"  #: already receiving the course, or barred from it


@dataclass(frozen=True)
class Consent:
    """Where a signup came from: kept as the proof of consent."""

    source: str
    ip: str | None = None
    user_agent: str | None = None


class SignupResult(NamedTuple):
    """What one signup led to (``decide``'s action), and who the address was before."""

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
    if not may_resend(last_confirmation, now=now, gap_seconds=resend_gap_seconds):
        return Action.WAIT
    return Action.CONFIRM


def record(
    connection: Connection, *, course: Course, entry: Entry, consent: Consent, now: datetime
) -> str:
    """Store one signup to be processed later (the web process's whole share); its uid."""
    row = _row(course.slug, entry, consent, now)
    _statements(connection.dialect).record.execute(connection, row)
    return str(row["signup_uid"])


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
) -> list[SignupResult]:
    """Record and process ``entries`` (distinct addresses) for ``course`` at once.

    ``by_operator``: added from the CLI, never bringing back anyone who left;
    ``confirmed`` (operator only): the operator holds their consent, enrol at once.
    """
    if confirmed and not by_operator:
        raise ValueError("only the operator can sign people up as confirmed")
    if len({entry.email for entry in entries}) != len(entries):
        raise ValueError("each address may appear once per call")
    uids = iter(new_uids(3 * len(entries)))
    rows = [_row(course.slug, entry, consent, now, uids=uids) for entry in entries]
    # in one order, whoever writes: two imports of the same people at once (PostgreSQL)
    # wait for each other instead of deadlocking over the address index
    rows.sort(key=lambda row: row["email"])
    outcomes: list[SignupResult] = []
    new_address = decide(
        status=None,
        enrollment_status=EnrollmentStatus.PENDING,
        last_confirmation=None,
        by_operator=by_operator,
        confirmed=confirmed,
        double_opt_in=course.double_opt_in,
        resend_gap_seconds=resend_gap_seconds,
        now=now,
    )
    if new_address == Action.ACTIVATE:  # (an import: the operator holds their consent)
        rows, outcomes = _enrol_new(connection, course, rows, now=now)
    outcomes += _process(
        connection,
        course,
        rows,
        recorded=False,
        now=now,
        by_operator=by_operator,
        confirmed=confirmed,
        resend_gap_seconds=resend_gap_seconds,
    )
    order = {entry.email: index for index, entry in enumerate(entries)}
    return sorted(outcomes, key=lambda outcome: order[outcome.email])


#: the tables ``_enrol_new`` writes, counted once per batch (``tallies.counted_at_the_end``)
_NEW_PEOPLE_TABLES = ("subscriber", "enrollment", "signup", "delivery")


def _enrol_new(
    connection: Connection, course: Course, rows: list[dict[str, Any]], *, now: datetime
) -> tuple[list[dict[str, Any]], list[SignupResult]]:
    """Enrol at once the addresses of ``rows`` drip does not know yet (``decide`` starts
    them at once): each stored as ``_process`` and ``activate_many`` would leave them
    (subscriber active, signup confirmed, enrollment started, day 1 and the welcome queued
    by ``start_many``), written in final form in a few multi-row statements, counted once
    for the batch, instead of stored pending and then activated row by row (an import of
    a list). The subscribers' insert tells which addresses are new: it does nothing for
    one drip has (or another transaction took meanwhile, on PostgreSQL). The rows left,
    for ``_process``: those addresses; and the outcomes of the new ones.

    A test holds both ways to the same rows, column by column.
    """
    if not rows:
        return rows, []
    statements = _statements(connection.dialect)
    with tallies.counted_at_the_end(connection, _NEW_PEOPLE_TABLES):
        subscriber_ids = new_ids(connection, "subscriber", len(rows))
        fresh = [
            {**row, "now": now, "subscriber_id": id_}
            for row, id_ in zip(rows, subscriber_ids, strict=True)
        ]
        statements.new_subscriber.insert_many(connection, fresh)
        stored = set(
            connection.execute(
                select(col(Subscriber.id)).where(
                    col(Subscriber.id).between(min(subscriber_ids), max(subscriber_ids))
                )
            ).scalars()
        )
        taken = [row for row in fresh if row["subscriber_id"] not in stored]
        fresh = [row for row in fresh if row["subscriber_id"] in stored]
        enrollment_ids = new_ids(connection, "enrollment", len(fresh))
        for row, id_ in zip(fresh, enrollment_ids, strict=True):
            row["enrollment_id"] = id_
        statements.new_enrollment.insert_many(connection, fresh)
        statements.new_signup.insert_many(connection, fresh)
        # (only inserts: a new enrollment has no lessons yet, and a course has a day 1)
        start_many(
            connection,
            [
                (
                    Member(
                        subscriber_id=row["subscriber_id"],
                        email=row["email"],
                        name=row["name"],
                        timezone=row["timezone"],
                        status=SubscriberStatus.ACTIVE,
                        unsubscribed_at=None,
                        confirmation_sent_at=None,
                        enrollment_id=row["enrollment_id"],
                        enrollment_uid=row["enrollment_uid"],
                        enrollment_status=EnrollmentStatus.ACTIVE,
                        course_slug=course.slug,
                        run=1,
                        send_at=None,
                        paused_until=None,
                    ),
                    row["timezone"],
                )
                for row in fresh
            ],
            histories={},
            course=course,
            now=now,
        )
    for table in _NEW_PEOPLE_TABLES:
        analyze_if_grown(connection, table, inserted=len(fresh))
    return taken, [SignupResult(row["email"], Action.ACTIVATE, None) for row in fresh]


def process_recorded(
    connection: Connection,
    *,
    catalog: Catalog,
    now: datetime,
    resend_gap_seconds: float,
    limit: int = 1000,
) -> int:
    """Process up to ``limit`` recorded signups, oldest first, in the caller's transaction;
    returns how many. Several processes may do this at once (PostgreSQL skips rows another
    transaction holds; SQLite has one writer)."""
    query = (
        select(
            col(Signup.uid), col(Signup.email), col(Signup.course_slug), *SignupDetails.columns()
        )
        .where(UNPROCESSED)
        .order_by(col(Signup.id))
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    pending = connection.execute(query).all()
    by_course: dict[str, list[dict[str, Any]]] = {}
    for uid, email, slug, *details in pending:
        said = SignupDetails(*details)
        entry = Entry(email, said.name, said.timezone)
        consent = Consent(said.source or "", said.ip, said.user_agent)
        row = _row(slug, entry, consent, said.created_at, signup_uid=uid)
        by_course.setdefault(slug, []).append(row)
    for slug, rows in by_course.items():
        course = catalog.find(slug)
        if course is None:  # removed from the YAML since: nothing to sign up for
            _statements(connection.dialect).drop.executemany(
                connection, [{**row, "now": now} for row in rows]
            )
            continue
        for run in _distinct_runs(rows):
            _process(
                connection,
                course,
                run,
                recorded=True,
                now=now,
                resend_gap_seconds=resend_gap_seconds,
            )
    return len(pending)


def _distinct_runs(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive runs with each address at most once (a double submit is processed after
    the first, so the resend gap applies to it)."""
    runs: list[list[dict[str, Any]]] = [[]]
    seen: set[str] = set()
    for row in rows:
        if row["email"] in seen:
            runs.append([])
            seen = set()
        runs[-1].append(row)
        seen.add(row["email"])
    return runs


def _row(
    slug: str,
    entry: Entry,
    consent: Consent,
    at: datetime,
    *,
    signup_uid: str | None = None,
    uids: Iterator[str] | None = None,
) -> dict[str, Any]:
    fresh = uids or iter(new_uids(3))
    return {
        "email": entry.email,
        "name": entry.name,
        "timezone": entry.timezone,
        "course": slug,
        "at": at,
        "ip": consent.ip,
        "agent": consent.user_agent,
        "source": consent.source,
        "signup_uid": signup_uid or next(fresh),
        "subscriber_uid": next(fresh),
        "enrollment_uid": next(fresh),
    }


def _process(
    connection: Connection,
    course: Course,
    rows: list[dict[str, Any]],
    *,
    recorded: bool,
    now: datetime,
    resend_gap_seconds: float,
    by_operator: bool = False,
    confirmed: bool = False,
) -> list[SignupResult]:
    """Apply the rules to signups of one course (distinct addresses): ``recorded`` ones
    are in the signup table already, the others are stored here, processed."""
    if not rows:
        return []
    emails = [row["email"] for row in rows]
    if len(set(emails)) != len(emails):
        raise ValueError("each address may appear once per call")
    statements = _statements(connection.dialect)
    rows = [{**row, "now": now} for row in rows]
    for statement in (
        statements.subscriber,
        statements.enrollment,
        statements.link if recorded else statements.stored,
    ):
        statement.executemany(connection, rows)

    members = {
        found[1]: (Member(*found[: len(Member.columns())]), found[-1])
        for found in connection.execute(
            Member.select()
            .add_columns(col(Subscriber.uid))
            # found by address: ``course_slug || ''`` is no index term, or a database
            # without statistics (SQLite) would read every enrollment of the course
            .where(
                col(Subscriber.email).in_(emails), col(Enrollment.course_slug) + "" == course.slug
            )
        )
    }
    signup_ids: dict[str, int] = dict(
        connection.execute(  # type: ignore[arg-type]
            select(col(Signup.uid), col(Signup.id)).where(
                col(Signup.uid).in_([row["signup_uid"] for row in rows])
            )
        ).all()
    )
    outcomes, activating, confirming = [], [], []
    for row in rows:
        member, subscriber_uid = members[row["email"]]
        signup_id = signup_ids[row["signup_uid"]]
        was = None if subscriber_uid == row["subscriber_uid"] else member.status
        action = decide(
            status=was,
            enrollment_status=member.enrollment_status,
            last_confirmation=member.confirmation_sent_at,
            by_operator=by_operator,
            confirmed=confirmed,
            double_opt_in=course.double_opt_in,
            resend_gap_seconds=resend_gap_seconds,
            now=now,
        )
        signup = SignupDetails(
            signup_id,
            row["name"],
            row["timezone"],
            row["at"],
            row["ip"],
            row["agent"],
            row["source"],
        )
        if action == Action.ACTIVATE:
            activating.append((member, signup))
        elif action == Action.CONFIRM:
            confirming.append((member, signup_id))
        outcomes.append(SignupResult(row["email"], action, was))
    queue_confirmations(connection, confirming, now=now)
    webhooks.emit_many(
        connection,
        [
            Event(EventType.SUBSCRIBER_PENDING, enrollment_id=member.enrollment_id)
            for member, _ in confirming
        ],
        now=now,
    )
    activate_many(connection, activating, course=course, now=now)
    return outcomes


class _Statements:
    """Signup's statements, compiled once per kind of database and run on the cursor."""

    def __init__(self, dialect: Dialect) -> None:
        upsert = insert_for(dialect)
        now = bindparam("now", type_=UTCDateTime())
        at = bindparam("at", type_=UTCDateTime())
        email = bindparam("email", type_=String())
        signup_uid = bindparam("signup_uid", type_=String())
        subscriber = select(col(Subscriber.id)).where(col(Subscriber.email) == email)
        #: a signup as it was posted
        posted: dict[str, BindParameter[Any]] = {
            "uid": signup_uid,
            "email": email,
            "course_slug": bindparam("course", type_=String()),
            "name": bindparam("name", type_=String()),
            "timezone": bindparam("timezone", type_=String()),
            "created_at": at,
            "ip": bindparam("ip", type_=String()),
            "user_agent": bindparam("agent", type_=String()),
            "source": bindparam("source", type_=String()),
        }
        self.record = Prepared(insert(Signup).values(**posted), dialect)
        #: what a signup gives the subscriber it makes
        person = {
            "uid": bindparam("subscriber_uid"),
            "email": email,
            "name": bindparam("name"),
            "timezone": bindparam("timezone"),
            "created_at": now,
            "consent_at": at,
            "consent_ip": bindparam("ip"),
            "consent_user_agent": bindparam("agent"),
            "consent_source": bindparam("source"),
        }
        self.subscriber = Prepared(
            upsert(Subscriber)
            .values(**person, status=SubscriberStatus.PENDING)
            .on_conflict_do_nothing(index_elements=["email"]),
            dialect,
        )
        self.enrollment = Prepared(
            upsert(Enrollment)
            .from_select(
                ["uid", "subscriber_id", "course_slug", "status", "created_at"],
                subscriber.with_only_columns(
                    bindparam("enrollment_uid", type_=String()),
                    col(Subscriber.id),
                    bindparam("course", type_=String()),
                    literal(EnrollmentStatus.PENDING.value),
                    now,
                ),
            )
            .on_conflict_do_nothing(index_elements=["subscriber_id", "course_slug"]),
            dialect,
        )
        self.stored = Prepared(
            insert(Signup).from_select(
                [*posted, "subscriber_id", "processed_at"],
                subscriber.with_only_columns(*posted.values(), col(Subscriber.id), now),
            ),
            dialect,
        )
        # a new person enrolled at once (``_enrol_new``): as activation leaves them
        self.new_subscriber = Prepared(
            upsert(Subscriber)
            .values(
                id=bindparam("subscriber_id"),
                **person,
                status=SubscriberStatus.ACTIVE,
                confirmed_at=now,
            )
            .on_conflict_do_nothing(index_elements=["email"]),
            dialect,
        )
        self.new_enrollment = Prepared(
            insert(Enrollment).values(
                id=bindparam("enrollment_id"),
                uid=bindparam("enrollment_uid"),
                subscriber_id=bindparam("subscriber_id"),
                course_slug=bindparam("course"),
                status=EnrollmentStatus.ACTIVE,
                created_at=now,
                started_at=now,
            ),
            dialect,
        )
        self.new_signup = Prepared(
            insert(Signup).values(
                **posted,
                subscriber_id=bindparam("subscriber_id"),
                processed_at=now,
                confirmed_at=now,
            ),
            dialect,
        )
        self.link = Prepared(
            update(Signup)
            .where(col(Signup.uid) == signup_uid)
            .values(subscriber_id=subscriber.scalar_subquery(), processed_at=now),
            dialect,
        )
        self.drop = Prepared(
            update(Signup).where(col(Signup.uid) == signup_uid).values(processed_at=now), dialect
        )


_statements = Compiled(_Statements)
