"""The send engine: claim due lessons, send them, record the receipts.

1. **Claim** a batch in one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
   ``BEGIN IMMEDIATE`` on SQLite): due rows become ``sending`` with a lease
   (``claimed_until``), so concurrent runs share the work and never take the same row.
2. **Send** each: build the message, re-check right before SMTP that the subscriber is
   still active and the claim still ours, hand it over.
3. **Record** in its own transaction: ``sent`` with the server's reply and Message-ID,
   and the next day scheduled. The lease value is the claim token: a worker whose lease
   expired and was taken over can no longer record anything.

A crash between 2 and 3 leaves the row ``sending``; after the lease it is claimed again
and resent with the same Message-ID. Temporary failures are retried with backoff;
a recipient rejected with 5xx is suppressed; a server that cannot be reached stops the
run early and releases every claim not yet attempted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from drip import schedule
from drip.compose import Composer, Recipient
from drip.config import Settings
from drip.courses import Catalog, Course
from drip.db import READ_ONLY
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


def _due_condition(now: datetime):  # type: ignore[no-untyped-def]
    return or_(
        and_(Delivery.status == DeliveryStatus.SCHEDULED, Delivery.due_at <= now),
        and_(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_until <= now),
    )


def claim(*, engine: Engine, now: datetime, limit: int, lease: timedelta) -> list[Claimed]:
    """Take up to ``limit`` due deliveries, oldest first, leased until ``now + lease``."""
    lease_until = now + lease
    with Session(engine) as session, session.begin():
        query = (
            select(Delivery.id)
            .where(_due_condition(now))
            .order_by(Delivery.due_at, Delivery.id)
            .limit(limit)
        )
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.execute(query).scalars())
        if not ids:
            return []
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), _due_condition(now))  # type: ignore[union-attr]
            .values(
                status=DeliveryStatus.SENDING,
                claimed_until=lease_until,
                attempts=Delivery.attempts + 1,
            )
        )
        rows = session.execute(
            select(
                Delivery.id,
                Delivery.enrollment_id,
                Delivery.day_id,
                Delivery.attempts,
                Enrollment.uid,
                Enrollment.course_slug,
                Subscriber.email,
                Subscriber.name,
                Subscriber.timezone,
            )
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
            .where(Delivery.id.in_(ids), Delivery.claimed_until == lease_until)  # type: ignore[union-attr]
            .order_by(Delivery.due_at, Delivery.id)
        ).all()
        history: dict[int, dict[str, str]] = {}
        for enrollment_id, day_id, status in session.execute(
            select(Delivery.enrollment_id, Delivery.day_id, Delivery.status).where(
                Delivery.enrollment_id.in_({r[1] for r in rows})  # type: ignore[attr-defined]
            )
        ):
            history.setdefault(enrollment_id, {})[day_id] = status
    return [
        Claimed(r[0], r[1], r[2], r[3], lease_until, *r[4:], history=history.get(r[1], {}))
        for r in rows
    ]


def due(*, engine: Engine, now: datetime, limit: int | None = None) -> list[dict[str, object]]:
    """What would be sent at ``now``, without claiming anything (``--dry-run``)."""
    query = (
        select(
            Enrollment.course_slug,
            Delivery.day_id,
            Delivery.due_at,
            Delivery.attempts,
            Subscriber.email,
        )
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(_due_condition(now))
        .order_by(Delivery.due_at, Delivery.id)
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

#: the statements run once per message, built once (building them is costlier than running)
_CHECK = (
    select(Delivery.status, Subscriber.status)
    .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
    .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
    .where(Delivery.id == bindparam("id"), Delivery.claimed_until == bindparam("lease"))
)
_MARK_SENT = (
    update(Delivery)
    .where(
        Delivery.id == bindparam("delivery"),
        Delivery.status == DeliveryStatus.SENDING,
        Delivery.claimed_until == bindparam("lease"),
    )
    .values(
        status=DeliveryStatus.SENT,
        claimed_until=None,
        sent_at=bindparam("now"),
        smtp_response=bindparam("reply"),
        message_id=bindparam("msgid"),
    )
)
_NEXT_VALUES = {
    "enrollment_id": bindparam("enrollment"),
    "day_id": bindparam("day"),
    "status": DeliveryStatus.SCHEDULED,
    "due_at": bindparam("due"),
    "attempts": 0,
    "created_at": bindparam("now"),
}
_INSERT_NEXT = {
    dialect: insert(Delivery)
    .values(**_NEXT_VALUES)
    .on_conflict_do_nothing(index_elements=["enrollment_id", "day_id"])
    for dialect, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}


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
        with self.mailer_factory() as mailer:
            while not self.stopping.is_set() and not report.stopped:
                size = budget.take(self.settings.batch_size)
                if not size:
                    return
                batch = claim(engine=self.engine, now=now, limit=size, lease=self.lease)
                budget.give_back(size - len(batch))
                if not batch:
                    return
                for index, item in enumerate(batch):
                    if self.stopping.is_set() or report.stopped:
                        self._release(batch[index:])
                        return
                    outcome = self._deliver(item, mailer, now, report)
                    report.add(outcome)
                    if progress:
                        progress(outcome)

    def _deliver(self, item: Claimed, mailer: Mailer, now: datetime, report: RunReport) -> str:
        try:
            course = self.catalog.get(item.course_slug)
        except UnknownCourse as error:
            return self._defer(item, now, str(error))
        day = course.day(item.day_id)
        if day is None:  # removed from the YAML: skip it, move on to the next day
            return self._finish(
                item, course, now, DeliveryStatus.SKIPPED, error="day removed from the course"
            )
        recipient = Recipient(
            item.email, item.name, item.uid, item.timezone or course.default_timezone
        )
        try:
            message = self.composer.lesson(course=course, day=day, recipient=recipient, now=now)
        except DripError as error:  # a template error: nobody gets a broken lesson
            return self._defer(item, now, str(error))
        if not self._still_wanted(item, now):
            return "cancelled"
        self.throttle.wait()
        try:
            reply = mailer.send(message)
        except TemporaryFailure as error:
            if error.connection:
                report.stopped = f"SMTP unavailable: {error}"
                self._release([item])
                log_event(logger, logging.ERROR, "smtp-unavailable", error=str(error))
                return "deferred"
            return self._defer(item, now, str(error), course=course)
        except PermanentFailure as error:
            return self._reject(item, course, now, error)
        return self._finish(
            item, course, now, DeliveryStatus.SENT, reply=reply, message_id=message.message_id
        )

    def _still_wanted(self, item: Claimed, now: datetime) -> bool:
        """Right before SMTP: is the claim still ours and the subscriber still active?

        A claim that is ours but whose subscriber is no longer active is cancelled here,
        so it is not claimed again after its lease.
        """
        with self.engine.connect().execution_options(**READ_ONLY) as connection:
            row = connection.execute(_CHECK, {"id": item.delivery_id, "lease": item.lease}).first()
        if row is None or row[0] != DeliveryStatus.SENDING:
            return False
        if row[1] != SubscriberStatus.ACTIVE:
            with self.engine.begin() as connection:
                self._update_claimed(
                    connection,
                    item,
                    {
                        "status": DeliveryStatus.CANCELLED,
                        "claimed_until": None,
                        "cancelled_at": now,
                    },
                )
            return False
        return True

    # -- recording ------------------------------------------------------------------------

    def _finish(
        self,
        item: Claimed,
        course: Course,
        now: datetime,
        status: DeliveryStatus,
        *,
        reply: str | None = None,
        message_id: str | None = None,
        error: str | None = None,
    ) -> str:
        """Record a final outcome for this day and queue the next one, in one transaction."""
        values: dict[str, object] = {"status": status, "claimed_until": None}
        if status == DeliveryStatus.FAILED:
            values.update(failed_at=now, last_error=error)
        else:
            values.update(last_error=error)
        with self.engine.begin() as connection:
            if status == DeliveryStatus.SENT:
                updated = connection.execute(
                    _MARK_SENT,
                    {
                        "delivery": item.delivery_id,
                        "lease": item.lease,
                        "now": now,
                        "reply": reply,
                        "msgid": message_id,
                    },
                ).rowcount
            else:
                updated = self._update_claimed(connection, item, values)
            if not updated:
                return "cancelled"  # unsubscribed meanwhile, or the lease was taken over
            self._queue_next(
                connection,
                item,
                course,
                now,
                sent_at=now if status == DeliveryStatus.SENT else None,
            )
        if status != DeliveryStatus.SENT:
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
        return str(status)  # "sent", "failed" or "skipped": RunReport's field names

    def _queue_next(
        self,
        connection: Connection,
        item: Claimed,
        course: Course,
        now: datetime,
        *,
        sent_at: datetime | None,
    ) -> None:
        done = {day for day, status in item.history.items() if status != DeliveryStatus.CANCELLED}
        zone = zone_for(item.timezone, course)
        plan = schedule.plan_next(
            day_ids=[day.id for day in course.days],
            done=done | {item.day_id},
            last_sent_at=sent_at,
            resuming=False,
            now=now,
            zone=zone,
            send_at=course.send_at,
            weekdays=course.weekdays,
        )
        if plan.day_id is None:
            connection.execute(
                update(Enrollment)
                .where(
                    Enrollment.id == item.enrollment_id,
                    Enrollment.status == EnrollmentStatus.ACTIVE,
                )
                .values(status=EnrollmentStatus.COMPLETED, completed_at=now)
            )
        elif plan.day_id in item.history:  # cancelled by an earlier unsubscribe: reuse it
            connection.execute(
                update(Delivery)
                .where(
                    Delivery.enrollment_id == item.enrollment_id,
                    Delivery.day_id == plan.day_id,
                    Delivery.status == DeliveryStatus.CANCELLED,
                )
                .values(
                    status=DeliveryStatus.SCHEDULED,
                    due_at=plan.due_at,
                    attempts=0,
                    cancelled_at=None,
                )
            )
        else:
            connection.execute(
                _INSERT_NEXT[connection.dialect.name],
                {
                    "enrollment": item.enrollment_id,
                    "day": plan.day_id,
                    "due": plan.due_at,
                    "now": now,
                },
            )

    def _defer(
        self, item: Claimed, now: datetime, error: str, *, course: Course | None = None
    ) -> str:
        """A temporary failure: retry with backoff, or give up after max attempts."""
        if course is not None and item.attempts >= self.settings.max_attempts:
            return self._finish(
                item,
                course,
                now,
                DeliveryStatus.FAILED,
                error=f"gave up after {item.attempts} attempts: {error}",
            )
        with Session(self.engine) as session, session.begin():
            self._update_claimed(
                session,
                item,
                {
                    "status": DeliveryStatus.SCHEDULED,
                    "claimed_until": None,
                    "due_at": schedule.retry_at(now=now, attempts=item.attempts),
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

    def _reject(self, item: Claimed, course: Course, now: datetime, error: PermanentFailure) -> str:
        outcome = self._finish(item, course, now, DeliveryStatus.FAILED, error=str(error))
        if not error.suppress:
            return outcome
        with Session(self.engine) as session, session.begin():
            subscriber = session.execute(
                select(Subscriber)
                .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
                .where(Enrollment.id == item.enrollment_id)
            ).scalar_one()
            stop_subscriber(
                session=session,
                subscriber=subscriber,
                status=SubscriberStatus.SUPPRESSED,
                now=now,
                reason=error.response,
            )
        return "suppressed"

    def _release(self, items: list[Claimed]) -> None:
        """Give back claims never attempted: due again at once, the attempt not counted."""
        with Session(self.engine) as session, session.begin():
            for item in items:
                self._update_claimed(
                    session,
                    item,
                    {
                        "status": DeliveryStatus.SCHEDULED,
                        "claimed_until": None,
                        "attempts": Delivery.attempts - 1,
                    },
                )

    @staticmethod
    def _update_claimed(connection: Connection, item: Claimed, values: dict[str, object]) -> bool:
        """Update the row only while this worker still holds its claim (the lease token)."""
        result = connection.execute(
            update(Delivery)
            .where(
                Delivery.id == item.delivery_id,
                Delivery.status == DeliveryStatus.SENDING,
                Delivery.claimed_until == item.lease,
            )
            .values(**values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


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
