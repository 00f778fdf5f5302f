"""The send engine: claim due lessons, send them, record the receipts.

1. **Claim** a batch in one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
   ``BEGIN IMMEDIATE`` on SQLite): due rows become ``sending`` with a lease
   (``claimed_until``), so concurrent runs share the work and never take the same row.
2. **Send** each: build the message, re-check right before SMTP that the subscriber is
   still active and the claim still ours, hand it over.
3. **Record** ``sent`` with the server's reply and Message-ID, and the next day
   scheduled, in the transaction that re-checks the next claim: so before anything
   else goes out on that connection. The lease value is the claim token: a worker whose
   lease expired and was taken over can no longer record anything.

A crash between 2 and 3 leaves the row ``sending`` (at most one per SMTP connection);
after the lease it is claimed again and resent with the same Message-ID. Temporary
failures are retried with backoff; a recipient rejected with 5xx is suppressed; a server
that cannot be reached stops the run early and releases every claim not yet attempted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    Select,
    and_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from drip import schedule
from drip.compose import Composer, Recipient
from drip.config import Settings
from drip.courses import Catalog, Course
from drip.db import Prepared
from drip.enrollment import stop_subscriber, zone_for
from drip.exceptions import DripError, PermanentFailure, TemporaryFailure, UnknownCourse
from drip.logs import log_event
from drip.mailer import Mailer, mailer_from_url
from drip.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
)

logger = logging.getLogger("drip.engine")


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds the lease on, with what sending it needs."""

    delivery_id: int
    enrollment_id: int
    day_id: str
    attempts: int
    lease: datetime
    uid: str
    course_slug: str
    email: str
    name: str
    timezone: str | None
    #: day id → status of every delivery row of this enrollment, at claim time
    history: dict[str, str] = field(default_factory=dict)


@dataclass
class RunReport:
    sent: int = 0  #: accepted by the mail server
    deferred: int = 0  #: temporary failure, will be retried
    failed: int = 0  #: given up (permanent rejection or too many attempts)
    suppressed: int = 0  #: address rejected permanently: nothing more goes to it
    cancelled: int = 0  #: the subscriber left after the claim
    skipped: int = 0  #: the day no longer exists in the course
    stopped: str | None = None  #: why the run stopped early, if it did
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, outcome: str) -> None:
        with self._lock:
            setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def ok(self) -> bool:
        """Everything due went out (or was rightly not sent)."""
        return not (self.deferred or self.failed or self.stopped)

    def as_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "deferred": self.deferred,
            "failed": self.failed,
            "suppressed": self.suppressed,
            "cancelled": self.cancelled,
            "skipped": self.skipped,
            "stopped": self.stopped,
        }


class Throttle:
    """A token bucket shared by all connections: at most ``rate`` messages per second."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._next = clock()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            slot = max(self._next, now)
            self._next = slot + 1.0 / self.rate
        if slot > now:
            time.sleep(slot - now)


# -- claiming -------------------------------------------------------------------------------

_Query = TypeVar("_Query", bound=Select)


def _joined(query: _Query) -> _Query:
    """``query`` joined from each delivery to its enrollment and subscriber."""
    return (
        query.select_from(Delivery)
        .join(Enrollment, col(Enrollment.id) == Delivery.enrollment_id)
        .join(Subscriber, col(Subscriber.id) == Enrollment.subscriber_id)
    )


def _due_condition(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(col(Delivery.status) == DeliveryStatus.SCHEDULED, col(Delivery.due_at) <= now),
        and_(col(Delivery.status) == DeliveryStatus.SENDING, col(Delivery.claimed_until) <= now),
    )


def claim(
    *, bind: Engine | Connection, now: datetime, limit: int, lease: timedelta
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries, oldest first, leased until ``now + lease``."""
    lease_until = now + lease
    with Session(bind) as session, session.begin():
        query = (
            select(col(Delivery.id))
            .where(_due_condition(now))
            .order_by(col(Delivery.due_at), col(Delivery.id))
            .limit(limit)
        )
        if bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.execute(query).scalars())
        if not ids:
            return []
        session.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(ids), _due_condition(now))
            .values(
                status=DeliveryStatus.SENDING,
                claimed_until=lease_until,
                attempts=col(Delivery.attempts) + 1,
            )
        )
        rows = session.execute(
            _joined(
                select(
                    col(Delivery.id),
                    col(Delivery.enrollment_id),
                    col(Delivery.day_id),
                    col(Delivery.attempts),
                    col(Enrollment.uid),
                    col(Enrollment.course_slug),
                    col(Subscriber.email),
                    col(Subscriber.name),
                    col(Subscriber.timezone),
                )
            )
            .where(col(Delivery.id).in_(ids), col(Delivery.claimed_until) == lease_until)
            .order_by(col(Delivery.due_at), col(Delivery.id))
        ).all()
        history: dict[int, dict[str, str]] = {}
        for enrollment_id, day_id, status in session.execute(
            select(col(Delivery.enrollment_id), col(Delivery.day_id), col(Delivery.status)).where(
                col(Delivery.enrollment_id).in_({r[1] for r in rows})
            )
        ):
            history.setdefault(enrollment_id, {})[day_id] = status
    return [
        Claimed(
            delivery_id=delivery_id,
            enrollment_id=enrollment_id,
            day_id=day_id,
            attempts=attempts,
            lease=lease_until,
            uid=uid,
            course_slug=slug,
            email=email,
            name=name,
            timezone=zone,
            history=history.get(enrollment_id, {}),
        )
        for delivery_id, enrollment_id, day_id, attempts, uid, slug, email, name, zone in rows
    ]


def due(*, engine: Engine, now: datetime, limit: int | None = None) -> list[dict[str, object]]:
    """What would be sent at ``now``, without claiming anything (``--dry-run``)."""
    query = (
        _joined(
            select(
                col(Enrollment.course_slug),
                col(Delivery.day_id),
                col(Delivery.due_at),
                col(Delivery.attempts),
                col(Subscriber.email),
            )
        )
        .where(_due_condition(now))
        .order_by(col(Delivery.due_at), col(Delivery.id))
        .limit(limit)
    )
    with Session(engine) as session:
        return [
            {
                "email": email,
                "course": slug,
                "day": day_id,
                "due_at": due_at.isoformat(),
                "attempts": attempts,
            }
            for slug, day_id, due_at, attempts, email in session.execute(query)
        ]


# -- sending --------------------------------------------------------------------------------


class _PerMessage:
    """The statements run for every message, compiled once for the database in use."""

    def __init__(self, dialect: Dialect) -> None:
        insert = pg_insert if dialect.name == "postgresql" else sqlite_insert
        self.check = Prepared(
            _joined(select(col(Subscriber.status))).where(
                col(Delivery.id) == bindparam("id"),
                col(Delivery.status) == DeliveryStatus.SENDING,
                col(Delivery.claimed_until) == bindparam("lease"),
            ),
            dialect,
        )
        self.mark_sent = Prepared(
            update(Delivery)
            .where(
                col(Delivery.id) == bindparam("delivery"),
                col(Delivery.status) == DeliveryStatus.SENDING,
                col(Delivery.claimed_until) == bindparam("lease"),
            )
            .values(
                status=DeliveryStatus.SENT,
                claimed_until=None,
                sent_at=bindparam("now"),
                smtp_response=bindparam("reply"),
                message_id=bindparam("msgid"),
            ),
            dialect,
        )
        self.insert_next = Prepared(
            insert(Delivery)
            .values(
                enrollment_id=bindparam("enrollment"),
                day_id=bindparam("day"),
                status=DeliveryStatus.SCHEDULED,
                due_at=bindparam("due"),
                attempts=0,
                created_at=bindparam("now"),
            )
            .on_conflict_do_nothing(index_elements=["enrollment_id", "day_id"]),
            dialect,
        )


class Sender:
    """Runs ``send-due``: several connections in parallel, each claiming its own batches."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        catalog: Catalog,
        composer: Composer | None = None,
        mailer_factory: Callable[[], Mailer] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.catalog = catalog
        self.composer = composer or Composer(settings=settings)
        url = settings.smtp_url.get_secret_value()
        self.mailer_factory = mailer_factory or (
            lambda: mailer_from_url(url, timeout=settings.smtp_timeout)
        )
        self.throttle = Throttle(settings.send_rate)
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.per_message = _PerMessage(engine.dialect)
        #: set to stop after the messages in flight (SIGTERM)
        self.stopping = threading.Event()

    def send_due(
        self,
        *,
        now: datetime,
        limit: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> RunReport:
        """Send everything due at ``now`` (at most ``limit``), then return the tally."""
        report = RunReport()
        budget = _Budget(limit)
        workers = self.settings.smtp_connections
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drip-send") as pool:
            futures = [
                pool.submit(self._work, now, report, budget, progress) for _ in range(workers)
            ]
            for future in futures:
                future.result()
        log_event(
            logger,
            logging.INFO,
            "send-due",
            now=now.isoformat(),
            seconds=round(time.monotonic() - started, 3),
            **report.as_dict(),
        )
        return report

    def _work(
        self,
        now: datetime,
        report: RunReport,
        budget: _Budget,
        progress: Callable[[str], None] | None,
    ) -> None:
        """One worker thread: its own SMTP and database connections, batch after batch."""
        with self.mailer_factory() as mailer, self.engine.connect() as connection:
            worker = _Worker(self, mailer, connection, now, report)
            while not self.stopping.is_set() and not report.stopped:
                size = budget.take(self.settings.batch_size)
                if not size:
                    return
                batch = claim(bind=connection, now=now, limit=size, lease=self.lease)
                budget.give_back(size - len(batch))
                if not batch:
                    return
                worker.run(batch, progress)


@dataclass(frozen=True)
class _Accepted:
    """A message the server accepted whose receipt is not written yet."""

    item: Claimed
    course: Course
    reply: str
    message_id: str


class _Worker:
    """Sends claimed lessons one after another over one SMTP and one database connection.

    The receipt of an accepted message is written in the same transaction as the
    re-check of the next claim, just before that one goes to SMTP: one transaction per
    message, and never more than one message per connection sent but not recorded.
    """

    def __init__(
        self,
        sender: Sender,
        mailer: Mailer,
        connection: Connection,
        now: datetime,
        report: RunReport,
    ) -> None:
        self.sender = sender
        self.settings = sender.settings
        self.mailer = mailer
        self.connection = connection
        self.now = now
        self.report = report
        self.statements = sender.per_message
        self.unrecorded: _Accepted | None = None

    def run(self, batch: list[Claimed], progress: Callable[[str], None] | None) -> None:
        try:
            for index, item in enumerate(batch):
                if self.sender.stopping.is_set() or self.report.stopped:
                    self._release(batch[index:])
                    return
                outcome = self._deliver(item)
                self.report.add(outcome)
                if progress:
                    progress(outcome)
        finally:
            if self.unrecorded is not None:
                with self._transaction():
                    pass

    def _deliver(self, item: Claimed) -> str:
        try:
            course = self.sender.catalog.get(item.course_slug)
        except UnknownCourse as error:
            return self._defer(item, str(error))
        day = course.day(item.day_id)
        if day is None:  # removed from the YAML: skip it, move on to the next day
            with self._transaction() as connection:
                return self._close_day(
                    connection,
                    item,
                    course,
                    DeliveryStatus.SKIPPED,
                    error="day removed from the course",
                )
        recipient = Recipient(
            item.email, item.name, item.uid, item.timezone or course.default_timezone
        )
        try:
            message = self.sender.composer.lesson(
                course=course, day=day, recipient=recipient, now=self.now
            )
        except DripError as error:  # a template error: nobody gets a broken lesson
            return self._defer(item, str(error))
        self.sender.throttle.wait()
        if not self._still_wanted(item):
            return "cancelled"
        try:
            reply = self.mailer.send(message)
        except TemporaryFailure as error:
            if error.connection:
                self.report.stopped = f"SMTP unavailable: {error}"
                self._release([item])
                log_event(logger, logging.ERROR, "smtp-unavailable", error=str(error))
                return "deferred"
            return self._defer(item, str(error), course=course)
        except PermanentFailure as error:
            return self._reject(item, course, error)
        self.unrecorded = _Accepted(item, course, reply, message.message_id)
        return "sent"

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction that first writes the receipt of the last accepted message."""
        with self.connection.begin():
            if self.unrecorded is not None:
                self._write_receipt(self.unrecorded)
            yield self.connection
        self.unrecorded = None

    def _still_wanted(self, item: Claimed) -> bool:
        """Right before SMTP: is the claim still ours and the subscriber still active?

        A claim that is ours but whose subscriber is no longer active is cancelled here,
        so it is not claimed again after its lease.
        """
        with self._transaction() as connection:
            row = self.statements.check.execute(
                connection, {"id": item.delivery_id, "lease": item.lease}
            ).fetchone()
            if row is None:
                return False
            if row[0] != SubscriberStatus.ACTIVE:
                self._update_claimed(
                    connection,
                    item,
                    {
                        "status": DeliveryStatus.CANCELLED,
                        "claimed_until": None,
                        "cancelled_at": self.now,
                    },
                )
                return False
        return True

    # -- recording ------------------------------------------------------------------------

    def _write_receipt(self, accepted: _Accepted) -> None:
        item = accepted.item
        updated = self.statements.mark_sent.execute(
            self.connection,
            {
                "delivery": item.delivery_id,
                "lease": item.lease,
                "now": self.now,
                "reply": accepted.reply,
                "msgid": accepted.message_id,
            },
        ).rowcount
        if updated:
            self._queue_next(self.connection, item, accepted.course, sent_at=self.now)
            return
        # Unsubscribed between the check and the send, or the lease was taken over.
        log_event(
            logger,
            logging.WARNING,
            "receipt-lost",
            email=item.email,
            course=item.course_slug,
            day=item.day_id,
            message_id=accepted.message_id,
        )

    def _close_day(
        self,
        connection: Connection,
        item: Claimed,
        course: Course,
        status: DeliveryStatus,
        *,
        error: str,
    ) -> str:
        """Record that this day will not be sent (skipped or failed); queue the next one."""
        values: dict[str, object] = {"status": status, "claimed_until": None, "last_error": error}
        if status == DeliveryStatus.FAILED:
            values["failed_at"] = self.now
        if not self._update_claimed(connection, item, values):
            return "cancelled"  # unsubscribed meanwhile, or the lease was taken over
        self._queue_next(connection, item, course, sent_at=None)
        log_event(
            logger,
            logging.WARNING,
            "delivery",
            outcome=status,
            email=item.email,
            course=item.course_slug,
            day=item.day_id,
            error=error,
        )
        return str(status)  # "failed" or "skipped": RunReport's field names

    def _queue_next(
        self,
        connection: Connection,
        item: Claimed,
        course: Course,
        *,
        sent_at: datetime | None,
    ) -> None:
        done = {day for day, status in item.history.items() if status != DeliveryStatus.CANCELLED}
        plan = schedule.plan_next(
            day_ids=[day.id for day in course.days],
            done=done | {item.day_id},
            last_sent_at=sent_at,
            resuming=False,
            now=self.now,
            zone=zone_for(item.timezone, course),
            send_at=course.send_at,
            weekdays=course.weekdays,
        )
        if plan.day_id is None:
            connection.execute(
                update(Enrollment)
                .where(
                    col(Enrollment.id) == item.enrollment_id,
                    col(Enrollment.status) == EnrollmentStatus.ACTIVE,
                )
                .values(status=EnrollmentStatus.COMPLETED, completed_at=self.now)
            )
        elif plan.day_id in item.history:  # cancelled by an earlier unsubscribe: reuse it
            connection.execute(
                update(Delivery)
                .where(
                    col(Delivery.enrollment_id) == item.enrollment_id,
                    col(Delivery.day_id) == plan.day_id,
                    col(Delivery.status) == DeliveryStatus.CANCELLED,
                )
                .values(
                    status=DeliveryStatus.SCHEDULED,
                    due_at=plan.due_at,
                    attempts=0,
                    cancelled_at=None,
                )
            )
        else:
            self.statements.insert_next.execute(
                connection,
                {
                    "enrollment": item.enrollment_id,
                    "day": plan.day_id,
                    "due": plan.due_at,
                    "now": self.now,
                },
            )

    def _defer(self, item: Claimed, error: str, *, course: Course | None = None) -> str:
        """A temporary failure: retry with backoff, or give up after max attempts."""
        with self._transaction() as connection:
            if course is not None and item.attempts >= self.settings.max_attempts:
                return self._close_day(
                    connection,
                    item,
                    course,
                    DeliveryStatus.FAILED,
                    error=f"gave up after {item.attempts} attempts: {error}",
                )
            self._update_claimed(
                connection,
                item,
                {
                    "status": DeliveryStatus.SCHEDULED,
                    "claimed_until": None,
                    "due_at": schedule.retry_at(now=self.now, attempts=item.attempts),
                    "last_error": error,
                },
            )
        log_event(
            logger,
            logging.WARNING,
            "delivery",
            outcome="deferred",
            email=item.email,
            course=item.course_slug,
            day=item.day_id,
            attempt=item.attempts,
            error=error,
        )
        return "deferred"

    def _reject(self, item: Claimed, course: Course, error: PermanentFailure) -> str:
        """A permanent failure: this day failed; a rejected address is suppressed."""
        with self._transaction() as connection:
            outcome = self._close_day(
                connection, item, course, DeliveryStatus.FAILED, error=str(error)
            )
            if not error.suppress:
                return outcome
            with Session(bind=connection) as session:
                subscriber = session.execute(
                    select(Subscriber)
                    .join(Enrollment, col(Enrollment.subscriber_id) == col(Subscriber.id))
                    .where(col(Enrollment.id) == item.enrollment_id)
                ).scalar_one()
                stop_subscriber(
                    session=session,
                    subscriber=subscriber,
                    status=SubscriberStatus.SUPPRESSED,
                    now=self.now,
                    reason=error.response,
                )
                session.flush()
        return "suppressed"

    def _release(self, items: list[Claimed]) -> None:
        """Give back claims never attempted: due again at once, the attempt not counted."""
        with self._transaction() as connection:
            for item in items:
                self._update_claimed(
                    connection,
                    item,
                    {
                        "status": DeliveryStatus.SCHEDULED,
                        "claimed_until": None,
                        "attempts": col(Delivery.attempts) - 1,
                    },
                )

    @staticmethod
    def _update_claimed(connection: Connection, item: Claimed, values: dict[str, object]) -> bool:
        """Update the row only while this worker still holds its claim (the lease token)."""
        result = connection.execute(
            update(Delivery)
            .where(
                col(Delivery.id) == item.delivery_id,
                col(Delivery.status) == DeliveryStatus.SENDING,
                col(Delivery.claimed_until) == item.lease,
            )
            .values(**values)
        )
        return bool(result.rowcount)


class _Budget:
    """What is left of ``--limit`` across workers (unlimited when None)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        with self._lock:
            if self.left is None:
                return wanted
            size = min(wanted, self.left)
            self.left -= size
            return size

    def give_back(self, unused: int) -> None:
        with self._lock:
            if self.left is not None:
                self.left += unused
