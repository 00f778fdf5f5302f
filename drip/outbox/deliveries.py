"""Named operations on the outbox (the ``delivery`` table), so the send loop reads as a loop.

Each function runs in the caller's transaction on a Core ``Connection`` (``check``, a
single read, outside any). An update of a
claimed row is guarded by its lease (``status = 'sending' AND claimed_until = lease``):
the lease value is the claim token, so a worker whose lease was taken over changes
nothing. Statements run once per message are compiled once per database kind
(``db.Prepared``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Dialect,
    ScalarSelect,
    Select,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.sql import ClauseElement
from sqlmodel import col

from drip.core import schedule
from drip.core.courses import Course
from drip.core.models import (
    TRANSACTIONAL_PENDING,
    Click,
    Delivery,
    Enrollment,
    Signup,
    Subscriber,
    UTCDateTime,
)
from drip.core.states import (
    PENDING_DELIVERY,
    ClickLink,
    DeliveryStatus,
    EmailKind,
    EnrollmentStatus,
    EventType,
)
from drip.outbox import webhooks
from drip.outbox.kinds import KINDS, lesson_day, lesson_key, row_key
from drip.store.statements import Compiled, Prepared, insert_for


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds the lease on, with what sending it needs."""

    delivery_id: int
    enrollment_id: int
    subscriber_id: int
    #: the row's key: the lesson's day id, or ``kind:…`` for other emails
    key: str
    kind: EmailKind
    attempts: int
    lease: datetime
    #: the enrollment's public uid (links, Message-IDs)
    uid: str
    course_slug: str
    email: str
    name: str
    timezone: str | None
    #: the enrollment's run of the course, own hour (``HH:MM``) and pause
    run: int = 1
    send_at: str | None = None
    paused_until: datetime | None = None
    #: the signup a confirmation belongs to (its link names it)
    signup_uid: str | None = None
    #: lesson key → status of every lesson row of this enrollment, at claim time
    history: dict[str, str] = field(default_factory=dict)

    @property
    def day_id(self) -> str:
        """A lesson's day id (its key without the run)."""
        return lesson_day(self.key)[0]

    def pace(self, course: Course, standing: Standing | None = None) -> schedule.Pace:
        """When this enrollment's lessons go: as at the claim, or as ``standing`` says now."""
        now = standing or Standing(self.run, self.send_at, self.paused_until)
        return course.pace(
            timezone=self.timezone,
            send_at=now.send_at,
            run=now.run,
            paused_until=now.paused_until,
        )


# -- claiming -------------------------------------------------------------------------------

_Query = TypeVar("_Query", bound=Select)  # type: ignore[type-arg]


def joined(query: _Query) -> _Query:
    """``query`` joined from each delivery to its enrollment and subscriber."""
    return (
        query.select_from(Delivery)
        .join(Enrollment, col(Enrollment.id) == Delivery.enrollment_id)
        .join(Subscriber, col(Subscriber.id) == Enrollment.subscriber_id)
    )


def held(lease: Any) -> tuple[ColumnElement[bool], ...]:
    """The row is still claimed with ``lease`` (a value or a bind parameter): the claim
    token. A worker whose lease ran out and was taken over matches no row."""
    return (
        col(Delivery.status) == DeliveryStatus.SENDING,
        col(Delivery.claimed_until) == lease,
    )


def status_is(status: DeliveryStatus) -> ColumnElement[bool]:
    """``delivery.status`` is ``status``, written as a literal."""
    # a literal, not a parameter, so the planner can match it to the partial index
    return col(Delivery.status) == literal_column(f"'{status.value}'")


def _scheduled(now: datetime) -> ColumnElement[bool]:
    return and_(status_is(DeliveryStatus.SCHEDULED), col(Delivery.due_at) <= now)


def _stranded(now: datetime) -> ColumnElement[bool]:
    """Claims whose lease ran out (their worker died or stalled)."""
    return and_(status_is(DeliveryStatus.SENDING), col(Delivery.claimed_until) <= now)


def is_due(now: datetime) -> ColumnElement[bool]:
    """Waiting for ``now``, or claimed with a lease that ran out."""
    return or_(_scheduled(now), _stranded(now))


def waiting(connection: Connection, *, now: datetime) -> dict[str, tuple[int, datetime]]:
    """Kind → (how many, the oldest due time) of the emails due at ``now`` and not yet
    sent, in flight included: read along the two partial indexes (scheduled, sending),
    so the cost is the queue's, not the outbox's."""
    found: dict[str, tuple[int, datetime]] = {}
    for status in (DeliveryStatus.SCHEDULED, DeliveryStatus.SENDING):
        for kind, count, oldest in connection.execute(
            select(col(Delivery.kind), func.count(), func.min(col(Delivery.due_at)))
            .where(status_is(status), col(Delivery.due_at) <= now)
            .group_by(col(Delivery.kind))
        ):
            before = found.get(kind)
            if before is not None:
                count, oldest = count + before[0], min(oldest, before[1])
            found[kind] = (count, oldest)
    return found


def claim(
    connection: Connection,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    lease_from: datetime | None = None,
    transactional_only: bool = False,
    enrollment_ids: Collection[int] | None = None,
) -> list[Claimed]:
    """Take up to ``limit`` emails due at ``now``, leased until ``lease_from`` (by
    default ``now``) + ``lease``: stranded claims first, then scheduled emails, each
    oldest first, each read along its partial index (only the rows taken are read).

    ``transactional_only`` leaves lessons alone (the web process's prompt sender);
    ``enrollment_ids`` takes only those enrollments' emails, lessons included (a day 1
    someone just confirmed for). Runs in its own transaction on ``connection``.
    """
    lease_until = (lease_from or now) + lease
    with connection.begin():
        ids: list[int | None] = []
        for waiting in (_stranded(now), _scheduled(now)):
            query = select(col(Delivery.id)).where(waiting)
            if enrollment_ids is not None:
                query = query.where(col(Delivery.enrollment_id).in_(enrollment_ids))
            elif transactional_only:
                query = query.where(TRANSACTIONAL_PENDING)
            query = query.order_by(col(Delivery.due_at), col(Delivery.id)).limit(limit - len(ids))
            if connection.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids += connection.execute(query).scalars()
            if len(ids) == limit:
                break
        if not ids:
            return []
        # By id alone (the primary key): the rows just read are this transaction's, locked
        # on PostgreSQL, under SQLite's write lock. Repeating the due condition here would
        # let the planner scan the partial indexes, every row due, for every claim.
        connection.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(ids))
            .values(
                status=DeliveryStatus.SENDING,
                claimed_until=lease_until,
                attempts=col(Delivery.attempts) + 1,
            )
        )
        rows: Sequence[Any] = connection.execute(
            joined(
                select(
                    col(Delivery.id),
                    col(Delivery.enrollment_id),
                    col(Delivery.key),
                    col(Delivery.kind),
                    col(Delivery.attempts),
                    col(Enrollment.uid),
                    col(Enrollment.course_slug),
                    col(Subscriber.id),
                    col(Subscriber.email),
                    col(Subscriber.name),
                    col(Subscriber.timezone),
                    col(Signup.uid),
                    col(Enrollment.run),
                    col(Enrollment.send_at),
                    col(Enrollment.paused_until),
                )
            )
            .outerjoin(Signup, col(Signup.id) == Delivery.signup_id)
            .where(col(Delivery.id).in_(ids), *held(lease_until))
            .order_by(col(Delivery.due_at), col(Delivery.id))
        ).all()
        history: dict[int, dict[str, str]] = {}
        for enrollment_id, day_id, status in connection.execute(
            select(col(Delivery.enrollment_id), col(Delivery.key), col(Delivery.status)).where(
                col(Delivery.enrollment_id).in_({row[1] for row in rows}),
                col(Delivery.kind) == EmailKind.LESSON,
            )
        ):
            history.setdefault(enrollment_id, {})[day_id] = status
    return [
        Claimed(
            delivery_id=row[0],
            enrollment_id=row[1],
            key=row[2],
            kind=EmailKind(row[3]),
            attempts=row[4],
            lease=lease_until,
            uid=row[5],
            course_slug=row[6],
            subscriber_id=row[7],
            email=row[8],
            name=row[9],
            timezone=row[10],
            signup_uid=row[11],
            run=row[12],
            send_at=row[13],
            paused_until=row[14],
            history=history.get(row[1], {}),
        )
        for row in rows
    ]


# -- per message ----------------------------------------------------------------------------


class _Statements:
    """The statements run for every message, compiled once for one kind of database."""

    def __init__(self, dialect: Dialect) -> None:
        lease = held(bindparam("lease"))
        checking = joined(select(col(Subscriber.status), col(Enrollment.status))).where(
            col(Delivery.id) == bindparam("id"), *lease
        )
        self.check = Prepared(checking, dialect)
        #: the same, holding the enrollment's row to the end of the transaction
        #: (PostgreSQL; under SQLite's write lock nothing else writes meanwhile)
        self.check_holding = Prepared(checking.with_for_update(of=[Enrollment]), dialect)
        self.dialect = dialect
        #: was the class link of an enrollment's lesson (by key) followed?
        self.clicked = Prepared(
            select(col(Click.id))
            .join(Delivery, col(Delivery.id) == col(Click.delivery_id))
            .where(
                col(Delivery.enrollment_id) == bindparam("enrollment"),
                col(Delivery.key) == bindparam("key"),
                col(Click.link) == ClickLink.CLASS.value,
            )
            .limit(1),
            dialect,
        )
        self.mark_sent = Prepared(
            update(Delivery)
            .where(col(Delivery.id) == bindparam("id"), *lease)
            .values(
                status=DeliveryStatus.SENT,
                claimed_until=None,
                sent_at=bindparam("now"),
                smtp_response=bindparam("reply"),
                message_id=bindparam("msgid"),
            ),
            dialect,
        )
        #: ``mark_sent`` for n rows at once, by n (the window size, and the last window's)
        self._mark_sent_many: dict[int, Prepared] = {}
        self._insert_rows: dict[int, Prepared] = {}
        self._standings: dict[int, Prepared] = {}
        #: a pause's end as the driver returns it → an aware datetime
        self.read_paused_until = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
        #: one email into the outbox
        self.insert = self.insert_rows(1)

    def standings(self, n: int) -> Prepared:
        """Run, own hour and pause of n enrollments (``id0``…)."""

        def build(n: int) -> ClauseElement:
            ids: list[BindParameter[int]] = [bindparam(f"id{i}") for i in range(n)]
            return select(
                col(Enrollment.id),
                col(Enrollment.run),
                col(Enrollment.send_at),
                col(Enrollment.paused_until),
            ).where(col(Enrollment.id).in_(ids))

        return self._sized(self._standings, n, build)

    def insert_rows(self, n: int) -> Prepared:
        """One INSERT of n emails into the outbox, skipping any (enrollment, key) already
        there: ``enrollment``, ``key``, ``kind``, ``signup``, ``due``, ``now``, each with
        the row's number after it (none for a single row)."""

        def build(n: int) -> ClauseElement:
            columns = {
                "enrollment": "enrollment_id",
                "key": "key",
                "kind": "kind",
                "signup": "signup_id",
                "due": "due_at",
                "now": "created_at",
            }
            table = Delivery.__table__.c  # type: ignore[attr-defined]
            rows = []
            for i in range(n):
                # each typed as its column: SQLAlchemy types only the first row's values
                # (a time in a later row would reach SQLite unconverted)
                p: dict[str, BindParameter[Any]] = {
                    name: bindparam(f"{name}{i}" if n > 1 else name, type_=table[column].type)
                    for name, column in columns.items()
                }
                rows.append(
                    {
                        "enrollment_id": p["enrollment"],
                        "key": p["key"],
                        "kind": p["kind"],
                        "signup_id": p["signup"],
                        "status": DeliveryStatus.SCHEDULED,
                        "due_at": p["due"],
                        "attempts": 0,
                        "created_at": p["now"],
                    }
                )
            statement = insert_for(self.dialect)(Delivery).values(rows)
            return statement.on_conflict_do_nothing(index_elements=["enrollment_id", "key"])

        return self._sized(self._insert_rows, n, build)

    def mark_sent_many(self, n: int) -> Prepared:
        """One UPDATE of n claimed rows of one lease (``id0``…, ``reply0``…, ``msgid0``…,
        ``lease``, ``now``), returning the ids it changed."""

        def build(n: int) -> ClauseElement:
            ids: list[BindParameter[Any]] = [bindparam(f"id{i}") for i in range(n)]
            by_id = col(Delivery.id)
            return (
                update(Delivery)
                .where(by_id.in_(ids), *held(bindparam("lease")))
                .values(
                    status=DeliveryStatus.SENT,
                    claimed_until=None,
                    sent_at=bindparam("now"),
                    smtp_response=case(
                        *((by_id == ids[i], bindparam(f"reply{i}")) for i in range(n))
                    ),
                    message_id=case(*((by_id == ids[i], bindparam(f"msgid{i}")) for i in range(n))),
                )
                .returning(by_id)
            )

        return self._sized(self._mark_sent_many, n, build)

    def _sized(
        self, made: dict[int, Prepared], n: int, build: Callable[[int], ClauseElement]
    ) -> Prepared:
        """The statement ``build(n)`` makes, compiled once per n (a race compiles it
        twice: harmless)."""
        found = made.get(n)
        if found is None:
            found = made.setdefault(n, Prepared(build(n), self.dialect))
        return found


#: the most emails ``queue_many`` puts in one statement
QUEUE_ROWS = 100
_statements = Compiled(_Statements)
#: each kind's stored value, by kind or by that value (a KeyError for no kind at all)
_KIND_VALUES = {kind: kind.value for kind in EmailKind}


def check(connection: Connection, item: Claimed, *, holding: bool = False) -> bool | None:
    """Right before SMTP: None when the claim is no longer ours, else whether the email is
    still wanted (its subscriber and enrollment are in a state that receives it).

    A read of its own, outside any transaction (``connection`` must not be in one); with
    ``holding``, in the caller's transaction, holding the enrollment until it ends, so
    that someone coming back (which updates the enrollment, then reads its lessons)
    waits for what this transaction does with the email."""
    statements = _statements(connection.dialect)
    params = {"id": item.delivery_id, "lease": item.lease}
    if holding:
        row = statements.check_holding.execute(connection, params).fetchone()
    else:
        row = statements.check.read_alone(connection, params)
    if row is None:
        return None
    return KINDS[item.kind].wants(row[0], row[1])


def clicked(connection: Connection, *, enrollment_id: int, key: str) -> bool:
    """Was the class link of the enrollment's lesson ``key`` followed? A read of its own,
    outside any transaction (as ``check``), right before SMTP."""
    params = {"enrollment": enrollment_id, "key": key}
    return _statements(connection.dialect).clicked.read_alone(connection, params) is not None


def mark_sent(
    connection: Connection, item: Claimed, *, reply: str, message_id: str, now: datetime
) -> bool:
    """Record the server's acceptance; False when the claim was no longer ours."""
    return bool(
        _statements(connection.dialect)
        .mark_sent.execute(
            connection,
            {
                "id": item.delivery_id,
                "lease": item.lease,
                "now": now,
                "reply": reply,
                "msgid": message_id,
            },
        )
        .rowcount
    )


def mark_sent_many(
    connection: Connection, accepted: Sequence[tuple[Claimed, str, str]], *, now: datetime
) -> set[int]:
    """``mark_sent`` for (claim, reply, Message-ID) of one batch (they share its lease) in
    one statement; the delivery ids recorded (a claim no longer ours is not)."""
    if len(accepted) == 1:
        item, reply, message_id = accepted[0]
        recorded = mark_sent(connection, item, reply=reply, message_id=message_id, now=now)
        return {item.delivery_id} if recorded else set()
    params: dict[str, Any] = {"lease": accepted[0][0].lease, "now": now}  # one batch: one lease
    for i, (item, reply, message_id) in enumerate(accepted):
        params[f"id{i}"] = item.delivery_id
        params[f"reply{i}"] = reply
        params[f"msgid{i}"] = message_id
    statement = _statements(connection.dialect).mark_sent_many(len(accepted))
    cursor = statement.execute(connection, params)
    return {int(row[0]) for row in cursor.fetchall()}


def update_claimed(connection: Connection, item: Claimed, values: Mapping[str, object]) -> bool:
    """Update the row only while this worker still holds its claim (the lease token)."""
    result = connection.execute(
        update(Delivery)
        .where(col(Delivery.id) == item.delivery_id, *held(item.lease))
        .values(**values)
    )
    return bool(result.rowcount)


def release(connection: Connection, item: Claimed) -> bool:
    """Give back a claim never attempted: due again at once, the attempt not counted."""
    return update_claimed(
        connection,
        item,
        {
            "status": DeliveryStatus.SCHEDULED,
            "claimed_until": None,
            "attempts": col(Delivery.attempts) - 1,
        },
    )


# -- queueing -------------------------------------------------------------------------------


def queue(
    connection: Connection,
    *,
    enrollment_id: int,
    kind: EmailKind,
    key: str,
    due_at: datetime,
    now: datetime,
    signup_id: int | None = None,
) -> bool:
    """Put one email in the outbox; False when that (enrollment, key) is already there."""
    return bool(
        _statements(connection.dialect)
        .insert.execute(
            connection,
            {
                "enrollment": enrollment_id,
                "key": key,
                "kind": kind.value,
                "signup": signup_id,
                "due": due_at,
                "now": now,
            },
        )
        .rowcount
    )


def queue_email(
    connection: Connection,
    *,
    enrollment_id: int,
    kind: EmailKind,
    now: datetime,
    due_at: datetime | None = None,
    signup_id: int | None = None,
) -> bool:
    """Put one email of ``kind`` (not a lesson) in the outbox, keyed as its kind says
    (``kinds.row_key``), due at ``due_at`` (by default at once); False when an email of
    that key is already there (an after-course email, a link asked for this hour)."""
    return queue(
        connection,
        enrollment_id=enrollment_id,
        kind=kind,
        key=row_key(kind, now=now),
        due_at=due_at or now,
        now=now,
        signup_id=signup_id,
    )


def queue_many(connection: Connection, emails: Sequence[Mapping[str, Any]]) -> None:
    """``queue`` for many emails in multi-row statements (up to ``QUEUE_ROWS`` rows
    each; on PostgreSQL, more than that in one COPY): each mapping has ``queue``'s
    keyword arguments (``signup_id`` optional)."""
    statements = _statements(connection.dialect)
    rows = [
        {
            "enrollment": email["enrollment_id"],
            "key": email["key"],
            "kind": _KIND_VALUES[email["kind"]],
            "signup": email.get("signup_id"),
            "due": email["due_at"],
            "now": email["now"],
        }
        for email in emails
    ]
    if connection.dialect.name == "postgresql" and len(rows) > QUEUE_ROWS:
        statements.insert.insert_many(connection, rows)
        return
    for start in range(0, len(rows), QUEUE_ROWS):
        chunk = rows[start : start + QUEUE_ROWS]
        if len(chunk) == 1:
            statements.insert.execute(connection, chunk[0])
            continue
        params = {f"{name}{i}": value for i, row in enumerate(chunk) for name, value in row.items()}
        statements.insert_rows(len(chunk)).execute(connection, params)


@dataclass(frozen=True)
class Standing:
    """An enrollment's pace as it stands now (a control may have changed it since a claim
    was made): its run, its own hour and its pause."""

    run: int
    send_at: str | None
    paused_until: datetime | None


def standings(connection: Connection, enrollment_ids: Collection[int]) -> dict[int, Standing]:
    """Each enrollment's run, own hour and pause, read in the caller's transaction."""
    if not enrollment_ids:
        return {}
    statements = _statements(connection.dialect)
    params = {f"id{i}": enrollment_id for i, enrollment_id in enumerate(enrollment_ids)}
    read = statements.read_paused_until
    return {
        row[0]: Standing(row[1], row[2], read(row[3]) if read else row[3])
        for row in statements.standings(len(params)).execute(connection, params).fetchall()
    }


def lesson_histories(
    connection: Connection, enrollment_ids: Collection[int]
) -> dict[int, tuple[dict[str, str], datetime | None]]:
    """Per enrollment: (lesson day id → status, when its last lesson was sent)."""
    found: dict[int, tuple[dict[str, str], datetime | None]] = {}
    if not enrollment_ids:
        return found
    for enrollment_id, day_id, status, sent_at in connection.execute(
        select(
            col(Delivery.enrollment_id),
            col(Delivery.key),
            col(Delivery.status),
            col(Delivery.sent_at),
        ).where(
            col(Delivery.enrollment_id).in_(enrollment_ids),
            col(Delivery.kind) == EmailKind.LESSON,
        )
    ):
        history, last_sent = found.setdefault(enrollment_id, ({}, None))
        history[day_id] = status
        if sent_at is not None and (last_sent is None or sent_at > last_sent):
            found[enrollment_id] = (history, sent_at)
    return found


def run_history(history: Mapping[str, str], run: int) -> dict[str, str]:
    """Day id → status of the lessons of one run of the course, from lesson key →
    status (``lesson_histories``)."""
    found = {}
    for key, status in history.items():
        day_id, key_run = lesson_day(key)
        if key_run == run:
            found[day_id] = status
    return found


def queue_next_lesson(
    connection: Connection,
    *,
    enrollment_id: int,
    course: Course,
    pace: schedule.Pace,
    now: datetime,
    history: Mapping[str, str],
    closed: str | None = None,
    last_sent_at: datetime | None = None,
    resuming: bool = False,
    not_before: datetime | None = None,
    batch: list[dict[str, Any]] | None = None,
) -> schedule.NextLesson | None:
    """Queue an enrollment's next lesson (``schedule.plan_next``), or complete it.

    The one rule for what comes next, used when a lesson is closed (``closed``: the key
    of a lesson sent, failed or skipped; ``last_sent_at`` when it was sent) and when an
    enrollment (re)starts (``resuming``). ``history``: lesson key → status
    (``lesson_histories``); only ``pace.run``'s lessons count. The lesson goes at the
    enrollment's own hour, in its zone, and not before a pause ends. At most one lesson
    per enrollment is ever queued: None when one already is. Completing queues the
    course's ``after_course`` email, once per enrollment ever. With ``batch``, a new
    lesson is added there (``queue``'s keyword arguments) for the caller's
    ``queue_many``, instead of queued at once.
    """
    statuses = run_history(history, pace.run)
    if closed is not None:
        day_id, run = lesson_day(closed)
        if run == pace.run:  # (a lesson of a run since restarted is no day of this one)
            statuses[day_id] = DeliveryStatus.SENT  # done, whatever its row says now
    if any(status in PENDING_DELIVERY for status in statuses.values()):
        return None
    pause_over = pace.earliest(now)
    if pause_over is not None:
        not_before = max(not_before or pause_over, pause_over)
    plan = schedule.plan_next(
        day_ids=[day.id for day in course.days],
        done={day for day, status in statuses.items() if status != DeliveryStatus.CANCELLED},
        last_sent_at=last_sent_at,
        resuming=resuming,
        now=now,
        zone=pace.zone,
        send_at=pace.send_at,
        weekdays=pace.weekdays,
        not_before=not_before,
    )
    if plan.day_id is None or plan.due_at is None:
        completed = connection.execute(
            update(Enrollment)
            .where(
                col(Enrollment.id) == enrollment_id,
                col(Enrollment.status) == EnrollmentStatus.ACTIVE,
            )
            .values(status=EnrollmentStatus.COMPLETED, completed_at=now)
        ).rowcount
        if completed:
            webhooks.emit(
                connection, EventType.COURSE_COMPLETED, enrollment_id=enrollment_id, now=now
            )
        if completed and course.after_course is not None:
            # the allowed day after the last lesson, at the subscriber's hour
            due = schedule.next_due(
                last_sent_at=last_sent_at or now,
                zone=pace.zone,
                send_at=pace.send_at,
                weekdays=pace.weekdays,
            )
            if pause_over is not None:
                due = max(due, pause_over)
            queued = queue_email(
                connection,
                enrollment_id=enrollment_id,
                kind=EmailKind.AFTER_COURSE,
                due_at=due,
                now=now,
            )
            if not queued:  # cancelled while an evergreen course's new days went out
                _revive(connection, enrollment_id, row_key(EmailKind.AFTER_COURSE, now=now), due)
        return plan
    key = lesson_key(plan.day_id, pace.run)
    if plan.day_id in statuses:  # cancelled by an earlier unsubscribe: revive it
        _revive(connection, enrollment_id, key, plan.due_at)
    else:
        email: dict[str, Any] = {
            "enrollment_id": enrollment_id,
            "kind": EmailKind.LESSON,
            "key": key,
            "due_at": plan.due_at,
            "now": now,
        }
        if batch is None:
            queue(connection, **email)
        else:
            batch.append(email)
    return plan


def _revive(connection: Connection, enrollment_id: int, key: str, due_at: datetime) -> None:
    """Queue a cancelled email of the enrollment again, due at ``due_at``, with a clean
    slate (an email sent, skipped or failed stays as it is)."""
    connection.execute(
        update(Delivery)
        .where(
            col(Delivery.enrollment_id) == enrollment_id,
            col(Delivery.key) == key,
            col(Delivery.status) == DeliveryStatus.CANCELLED,
        )
        .values(
            status=DeliveryStatus.SCHEDULED,
            due_at=due_at,
            attempts=0,
            cancelled_at=None,
            claimed_until=None,
            last_error=None,
        )
    )


def last_lesson_key(enrollment_id: Any) -> ScalarSelect[str]:
    """The outbox key of the last lesson an enrollment had, sent or going out (a claimed
    one may already be in the inbox), as a subquery; lessons are queued in order."""
    return (
        select(col(Delivery.key))
        .where(
            col(Delivery.enrollment_id) == enrollment_id,
            col(Delivery.kind) == EmailKind.LESSON,
            col(Delivery.status).in_([DeliveryStatus.SENT, DeliveryStatus.SENDING]),
        )
        .order_by(col(Delivery.id).desc())
        .limit(1)
        .scalar_subquery()
    )


def cancel_pending(
    connection: Connection,
    *,
    subscriber_id: int,
    now: datetime,
    keep: Collection[EmailKind] = (),
) -> int:
    """Cancel every email waiting to be sent to a subscriber (but those of the ``keep``
    kinds); how many. A claimed one is its worker's: the worker re-checks right before
    SMTP and cancels it then, or, if it already went out, records it as sent (cancelling
    it here could have it revived and sent again when the subscriber comes back)."""
    enrollment_ids = select(col(Enrollment.id)).where(
        col(Enrollment.subscriber_id) == subscriber_id
    )
    result = connection.execute(
        update(Delivery)
        .where(
            col(Delivery.enrollment_id).in_(enrollment_ids),
            col(Delivery.status) == DeliveryStatus.SCHEDULED,
            col(Delivery.kind).not_in([kind.value for kind in keep]),
        )
        .values(status=DeliveryStatus.CANCELLED, cancelled_at=now)
    )
    return int(result.rowcount)
