"""The send engine: claim due emails from the outbox, send them, record the receipts.

1. **Claim** a batch in one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
   ``BEGIN IMMEDIATE`` on SQLite): due rows become ``sending`` with a lease
   (``claimed_until``), so concurrent runs share the work and never take the same row.
2. **Send** each: build the message, re-check right before SMTP (one read, outside any
   transaction) that the claim is still ours and its subscriber still wants this kind of
   email, hand it over. With SMTP PIPELINING a message's outcome is read with the next
   message's envelope replies (``Mailer.submit``), so it is settled one message later.
3. **Record** ``sent`` with the server's reply and Message-ID (and, for a lesson, queue
   the next day) a window at a time: once ``DRIP_SMTP_WINDOW`` messages are sent and
   not recorded (the one in flight settled first), their receipts are written together,
   in one transaction, before the next claim is re-checked, so before anything more goes
   out on that connection. The lease value is the claim token: a worker whose lease
   expired and was taken over can no longer record anything.

A crash between 2 and 3 leaves rows ``sending`` (at most one window per SMTP
connection); after the lease they are claimed again and resent with the same Message-ID. Temporary
failures are retried with backoff; a recipient rejected with 5xx is suppressed; a server
that cannot be reached stops the run early and releases every claim not yet attempted.
Every kind of email (lesson, confirmation, welcome, goodbye) goes this one way. The SQL
lives in ``drip.outbox.deliveries``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine

from drip.core import schedule
from drip.core.config import Settings
from drip.core.courses import Catalog, Course
from drip.core.exceptions import ConfigError, DripError, PermanentFailure, TemporaryFailure
from drip.core.logs import log_event
from drip.core.states import CONDITION_NOT_MET, DeliveryStatus, EmailKind, EventType
from drip.outbox import deliveries, webhooks
from drip.outbox.deliveries import Claimed
from drip.outbox.kinds import lesson_key
from drip.outbox.webhooks import Event
from drip.sending.mailer import Mailer, mailer_from_url, transport_for
from drip.sending.mailer.base import Settled
from drip.store.statements import generic_plans

if TYPE_CHECKING:
    from drip.sending.compose import Composer
    from drip.sending.message import Outgoing

logger = logging.getLogger("drip.engine")


class Chore(Protocol):
    """Work a run does before it sends, given ``now`` and the run's stop flag (SIGTERM)."""

    def __call__(self, *, now: datetime, stopping: threading.Event) -> None: ...


#: what a recipient the server refused for good (RCPT 5xx) leads to, in the transaction
#: that records the failure: (connection, the claim, the server's reply, now)
Refused = Callable[[Connection, "Claimed", str, datetime], None]


class SendOutcome(StrEnum):
    """What became of one email a run took from the outbox."""

    SENT = "sent"  #: accepted by the mail server
    DEFERRED = "deferred"  #: temporary failure (or released unsent): tried again later
    FAILED = "failed"  #: given up: permanent rejection or too many attempts
    SUPPRESSED = "suppressed"  #: address rejected permanently: nothing more goes to it
    CANCELLED = "cancelled"  #: not wanted any more (the subscriber left), or not ours
    SKIPPED = "skipped"  #: the lesson's day no longer exists in the course


@dataclass
class RunReport:
    counts: dict[SendOutcome, int] = field(default_factory=lambda: dict.fromkeys(SendOutcome, 0))
    stopped: str | None = None  #: why the run stopped early, if it did
    #: course files that failed to load: their emails wait until they are fixed
    course_problems: list[str] = field(default_factory=list)
    #: the run stopped on a configuration error (fix it; nothing was used up)
    config_error: str | None = None
    #: when the run began (``Sender.clock``): leases count from the time of each claim
    started: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, outcome: SendOutcome) -> None:
        with self._lock:
            self.counts[outcome] += 1

    def __getitem__(self, outcome: SendOutcome) -> int:
        return self.counts[outcome]

    @property
    def sent(self) -> int:
        return self.counts[SendOutcome.SENT]

    @property
    def ok(self) -> bool:
        """Everything due went out (or was rightly not sent)."""
        return not (
            self.counts[SendOutcome.DEFERRED]
            or self.counts[SendOutcome.FAILED]
            or self.stopped
            or self.course_problems
        )

    def as_dict(self) -> dict[str, object]:
        return {**{str(outcome): n for outcome, n in self.counts.items()}, "stopped": self.stopped}


class Throttle:
    """A token bucket shared by all connections: at most ``rate`` messages per second."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
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
            self._sleep(slot - now)


class Sender:
    """Runs ``send-due``: several connections in parallel, each claiming its own batches.

    ``transactional_only`` makes a sender for the web process: it sends confirmations,
    welcomes and goodbyes, and leaves lessons to ``send-due`` / ``drip run``.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        catalog: Catalog,
        composer: Composer | None = None,
        mailer_factory: Callable[[], Mailer] | None = None,
        throttle: Throttle | None = None,
        refused: Refused,
        chores: Sequence[Chore] = (),
        transactional_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.refused = refused
        self.chores = tuple(chores)
        #: seconds, monotonic: how long a run has lasted (leases count from each claim)
        self.clock = clock
        self.settings = settings
        self.catalog = catalog
        self._composer = composer
        url = settings.smtp_url.get_secret_value()
        if mailer_factory is None:
            transport_for(url, timeout=settings.smtp_timeout)  # a wrong URL: now, said once
        self.mailer_factory = mailer_factory or (
            lambda: mailer_from_url(url, timeout=settings.smtp_timeout)
        )
        self.throttle = throttle or Throttle(settings.send_rate)
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.transactional_only = transactional_only
        #: set to stop after the messages in flight (SIGTERM)
        self.stopping = threading.Event()

    def send_due(
        self,
        *,
        now: datetime,
        limit: int | None = None,
        progress: Callable[[SendOutcome], None] | None = None,
        enrollment_ids: Collection[int] | None = None,
    ) -> RunReport:
        """Do the run's chores (process recorded signups …), then send everything due at
        ``now`` (at most ``limit``; with ``enrollment_ids``, only those enrollments'
        emails, lessons included) and return the tally. Course files changed since the
        last run are read again first; a broken one is reported and its emails wait."""
        report = RunReport(course_problems=self.refresh_courses(), started=self.clock())
        for chore in self.chores:
            chore(now=now, stopping=self.stopping)
        budget = _Budget(limit)
        workers = self.settings.smtp_connections
        if workers == 1:
            self._work(now, report, budget, progress, enrollment_ids)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drip-send") as pool:
                futures = [
                    pool.submit(self._work, now, report, budget, progress, enrollment_ids)
                    for _ in range(workers)
                ]
                for future in futures:
                    future.result()
        if self.stopping.is_set() and report.stopped is None:
            report.stopped = "asked to stop (the rest is left for the next run)"
        if any(report.counts.values()) or report.stopped or not self.transactional_only:
            log_event(
                logger,
                logging.INFO,
                "send-due",
                now=now.isoformat(),
                seconds=round(self.clock() - report.started, 3),
                **report.as_dict(),
            )
        return report

    @property
    def composer(self) -> Composer:
        """Made on first use: a run with nothing to send never loads the templates."""
        if self._composer is None:
            from drip.sending.compose import Composer

            self._composer = Composer(settings=self.settings)
        return self._composer

    def refresh_courses(self) -> list[str]:
        """Re-read the course directory if it changed; its problems, each logged."""
        if self.catalog.directory is None:
            return []
        if self.catalog.refresh() and self._composer is not None:
            self._composer.forget()
        for problem in self.catalog.problems:
            log_event(logger, logging.ERROR, "course-invalid", problem=problem)
        return list(self.catalog.problems)

    def _work(
        self,
        now: datetime,
        report: RunReport,
        budget: _Budget,
        progress: Callable[[SendOutcome], None] | None,
        only: Collection[int] | None,
    ) -> None:
        """One worker thread: its own SMTP and database connections, batch after batch.
        The mailer is made once there is something to send (a run with nothing due
        never loads it)."""
        with self.engine.connect() as connection, generic_plans(connection):
            batch = self._claim(connection, now, report, budget, only)
            if not batch:
                return
            try:
                mailer = self.mailer_factory()
            except ConfigError as error:  # DRIP_SMTP_URL itself is wrong: give the batch back
                first = report.config_error is None  # one line, however many connections
                report.stopped = report.config_error = str(error)
                with connection.begin():
                    for item in batch:
                        deliveries.release(connection, item)
                if first:
                    log_event(logger, logging.ERROR, "smtp-config", error=str(error))
                return
            with mailer:
                worker = _Worker(self, mailer, connection, now, report)
                while batch:
                    worker.run(batch, progress)
                    batch = self._claim(connection, now, report, budget, only)

    def _claim(
        self,
        connection: Connection,
        now: datetime,
        report: RunReport,
        budget: _Budget,
        only: Collection[int] | None,
    ) -> list[Claimed]:
        """The next batch of this worker: none once the run stops or the budget is spent."""
        if self.stopping.is_set() or report.stopped:
            return []
        size = budget.take(self.settings.batch_size)
        if not size:
            return []
        batch = deliveries.claim(
            connection,
            now=now,
            limit=size,
            lease=self.lease,
            # a run may last longer than a lease: each lease counts from its own claim
            lease_from=now + timedelta(seconds=self.clock() - report.started),
            transactional_only=self.transactional_only,
            enrollment_ids=only,
        )
        budget.give_back(size - len(batch))
        return batch


@dataclass(frozen=True)
class _Accepted:
    """A message the server accepted whose receipt is not written yet."""

    item: Claimed
    course: Course
    reply: str
    message_id: str


class _Worker:
    """Sends claimed emails one after another over one SMTP and one database connection,
    composing a window's messages before sending them.

    Each claim is re-checked right before SMTP, a read on its own outside a transaction;
    once a window of sent messages is full (accepted, or in flight), the one in flight is
    settled and their receipts are written first, in one transaction. So one writing
    transaction per window, and never more than one window per connection sent but not
    recorded.
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
        self.progress: Callable[[SendOutcome], None] | None = None
        #: accepted messages of this batch whose receipts are not written yet
        self.unrecorded: list[_Accepted] = []
        #: handed to the mailer, outcome not known yet (in flight), by Message-ID
        self.pending: dict[str, tuple[Claimed, Course]] = {}
        #: the last connection failure (two messages in flight may share one)
        self.lost: TemporaryFailure | None = None

    def run(self, batch: list[Claimed], progress: Callable[[SendOutcome], None] | None) -> None:
        """Send ``batch``, a window at a time: its messages composed first, then each one
        checked and handed to SMTP (the check's reads stay in the CPU's caches, instead of
        coming back cold after each composing)."""
        self.progress = progress
        window = self.settings.smtp_window
        try:
            for start in range(0, len(batch), window):
                if self.sender.stopping.is_set() or self.report.stopped:
                    self._settle()
                    self._release(batch[start:])
                    return
                composed = [self._compose_or_close(item) for item in batch[start : start + window]]
                for index, ready in enumerate(composed):
                    if self.sender.stopping.is_set() or self.report.stopped:
                        self._settle()
                        left = [each[0] for each in composed[index:] if each is not None]
                        self._release(left + batch[start + window :])
                        return
                    if ready is not None:
                        self._deliver(*ready)
        finally:
            try:
                self._settle()
            finally:
                if self.unrecorded:
                    self._write_waiting()

    def _count(self, outcome: SendOutcome) -> None:
        self.report.add(outcome)
        if self.progress:
            self.progress(outcome)

    def _compose_or_close(self, item: Claimed) -> tuple[Claimed, Course, Outgoing] | None:
        """The message for ``item``, or None when there is none to send: its course or
        day is gone (deferred, or skipped to the next day) or its template fails."""
        course = self.sender.catalog.find(item.course_slug)
        if course is None:
            self._count(self._defer(item, f"unknown course {item.course_slug!r}"))
            return None
        removed = _removed(item, course)
        if removed:  # removed from the YAML: skip it (a lesson: move on to the next day)
            with self._transaction() as connection:
                skipped = DeliveryStatus.SKIPPED
                self._count(self._close(connection, item, course, skipped, error=removed))
            return None
        try:
            return item, course, self._compose(item, course)
        except DripError as error:  # a template error: nobody gets a broken email
            self._count(self._defer(item, str(error)))
            return None

    def _deliver(self, item: Claimed, course: Course, message: Outgoing) -> None:
        """Right before SMTP: the rate, the check and ``send_if``; then hand it over."""
        self.sender.throttle.wait()
        if self.sender.stopping.is_set():  # asked to stop while waiting for its turn
            self._release([item])
            return
        if not self._still_wanted(item):
            self._count(SendOutcome.CANCELLED)
            return
        ruled_out = self._ruled_out(item, course)
        if ruled_out:  # its send_if says no: skipped, and the next day takes its slot
            with self._transaction() as connection:
                skipped = DeliveryStatus.SKIPPED
                self._count(self._close(connection, item, course, skipped, error=ruled_out))
            return
        if self.report.stopped:  # the message in flight, settled for the check, found SMTP gone
            self._release([item])
            return
        self.pending[message.message_id] = (item, course)
        for settled in self.mailer.submit(message):
            self._count(self._settled(settled))

    def _settle(self) -> None:
        """Wait for the outcome of the message in flight, if any, and act on it."""
        for settled in self.mailer.settle():
            self._count(self._settled(settled))

    def _settled(self, settled: Settled) -> SendOutcome:
        """Act on what became of a message handed to the mailer."""
        item, course = self.pending.pop(settled.message.message_id)
        error = settled.error
        if error is None:
            message_id = settled.message.message_id
            self.unrecorded.append(_Accepted(item, course, settled.reply, message_id))
            return SendOutcome.SENT
        if isinstance(error, ConfigError):  # refused login, TLS required but not offered …
            self.report.stopped = self.report.config_error = str(error)
            self._release([item])
            log_event(logger, logging.ERROR, "smtp-config", error=str(error))
            return SendOutcome.DEFERRED
        if isinstance(error, TemporaryFailure):
            if error.connection:
                self.report.stopped = f"SMTP unavailable: {error}"
                self._release([item])
                if error is not self.lost:  # one line for two messages lost together
                    log_event(logger, logging.ERROR, "smtp-unavailable", error=str(error))
                self.lost = error
                return SendOutcome.DEFERRED
            return self._defer(item, str(error), course=course)
        if isinstance(error, PermanentFailure):
            return self._reject(item, course, error)
        raise error

    def _compose(self, item: Claimed, course: Course) -> Outgoing:
        from drip.sending.compose import Recipient

        recipient = Recipient(item.email, item.name, item.uid, course.zone_name_for(item.timezone))
        composer = self.sender.composer
        if item.kind == EmailKind.LESSON:
            day = course.day(item.day_id)
            assert day is not None  # checked by the caller
            return composer.lesson(
                course=course, day=day, recipient=recipient, now=self.now, key=item.key
            )
        return composer.transactional(
            item.kind,
            course=course,
            recipient=recipient,
            key=item.key,
            now=self.now,
            signup_uid=item.signup_uid,
            history=deliveries.run_history(item.history, item.run),
        )

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction that first writes the receipts of the messages accepted since."""
        with self.connection.begin():
            written = bool(self.unrecorded)
            if written:
                self._write_receipts(self.unrecorded)
            yield self.connection
        if written:
            self.unrecorded = []

    def _write_waiting(self) -> None:
        """Write the receipts waiting, in a transaction of their own."""
        with self._transaction():
            pass

    def _still_wanted(self, item: Claimed) -> bool:
        """Right before SMTP: is the claim still ours and the email still wanted?

        A claim that is ours but no longer wanted (the subscriber left) is cancelled
        here, so it is not claimed again after its lease.
        """
        if len(self.unrecorded) + len(self.pending) >= self.settings.smtp_window:
            self._settle()  # a full window: the message in flight settled, receipts first
            if self.unrecorded:
                self._write_waiting()
        wanted = deliveries.check(self.connection, item)
        if wanted is False:
            with self._transaction() as connection:
                # again, holding the enrollment: a subscriber who came back in between
                # (their lessons read while this row was still ours) is sent it now, and
                # one coming back later finds it cancelled, to be queued again
                wanted = deliveries.check(connection, item, holding=True)
                if wanted is not False:
                    return bool(wanted)
                deliveries.update_claimed(
                    connection,
                    item,
                    {
                        "status": DeliveryStatus.CANCELLED,
                        "claimed_until": None,
                        "cancelled_at": self.now,
                    },
                )
        return bool(wanted)

    def _ruled_out(self, item: Claimed, course: Course) -> str | None:
        """Why a lesson's ``send_if`` rules it out now, if it does: decided right before
        SMTP, so a click up to this moment counts (the earlier day of the same run)."""
        day = course.day(item.day_id) if item.kind == EmailKind.LESSON else None
        condition = day.send_if if day is not None else None
        if condition is None:
            return None
        followed = deliveries.clicked(
            self.connection,
            enrollment_id=item.enrollment_id,
            key=lesson_key(condition.day_id, item.run),
        )
        return None if condition.wants(followed) else f"{CONDITION_NOT_MET}: {condition}"

    # -- recording ------------------------------------------------------------------------

    def _write_receipts(self, accepted: list[_Accepted]) -> None:
        recorded = deliveries.mark_sent_many(
            self.connection,
            [(each.item, each.reply, each.message_id) for each in accepted],
            now=self.now,
        )
        next_lessons: list[dict[str, Any]] = []
        lessons = {e.item.enrollment_id for e in accepted if e.item.kind == EmailKind.LESSON}
        now_standing = deliveries.standings(self.connection, lessons)
        for each in accepted:
            item = each.item
            if item.delivery_id in recorded:
                standing = now_standing.get(item.enrollment_id)
                self._queue_next(self.connection, item, each.course, standing, batch=next_lessons)
                continue
            # Unsubscribed between the check and the send, or the lease was taken over.
            log_event(
                logger,
                logging.WARNING,
                "receipt-lost",
                email=item.email,
                course=item.course_slug,
                day=item.key,
                message_id=each.message_id,
            )
        deliveries.queue_many(self.connection, next_lessons)
        webhooks.emit_many(
            self.connection,
            [
                Event(
                    EventType.LESSON_SENT,
                    {
                        "day": {
                            "id": each.item.day_id,
                            "number": each.course.day_number(each.item.day_id),
                        },
                        "message_id": each.message_id,
                    },
                    enrollment_id=each.item.enrollment_id,
                )
                for each in accepted
                if each.item.delivery_id in recorded
                and each.item.kind == EmailKind.LESSON
                and each.course.day(each.item.day_id) is not None
            ],
            now=self.now,
        )

    def _queue_next(
        self,
        connection: Connection,
        item: Claimed,
        course: Course,
        standing: deliveries.Standing | None,
        *,
        skipped: bool = False,
        batch: list[dict[str, Any]] | None = None,
    ) -> None:
        """After a lesson is closed, its enrollment's next one (other kinds end here): due
        the next allowed local day after now, or, in place of a day removed from the
        course (``skipped``), at once: the removed day's row was due no earlier than the
        day after the last lesson, so none went out today. ``standing``: the enrollment's
        pace as it is now, read in this transaction (a pause, another hour or a restart
        since the claim count)."""
        if item.kind != EmailKind.LESSON:
            return
        deliveries.queue_next_lesson(
            connection,
            enrollment_id=item.enrollment_id,
            course=course,
            pace=item.pace(course, standing),
            now=self.now,
            history=item.history,
            closed=item.key,
            resuming=skipped,
            batch=batch,
        )

    def _close(
        self,
        connection: Connection,
        item: Claimed,
        course: Course,
        status: DeliveryStatus,
        *,
        error: str,
    ) -> SendOutcome:
        """Record that this email will not be sent (skipped or failed); for a lesson,
        queue the next one."""
        values: dict[str, object] = {"status": status, "claimed_until": None, "last_error": error}
        if status == DeliveryStatus.FAILED:
            values["failed_at"] = self.now
        if not deliveries.update_claimed(connection, item, values):
            return SendOutcome.CANCELLED  # unsubscribed meanwhile, or the lease was taken over
        if item.kind == EmailKind.LESSON:
            standing = deliveries.standings(connection, [item.enrollment_id]).get(
                item.enrollment_id
            )
            skipped = status == DeliveryStatus.SKIPPED
            self._queue_next(connection, item, course, standing, skipped=skipped)
        log_event(
            logger,
            logging.WARNING,
            "delivery",
            outcome=status,
            kind=item.kind,
            email=item.email,
            course=item.course_slug,
            day=item.key,
            error=error,
        )
        return SendOutcome(str(status))

    def _defer(self, item: Claimed, error: str, *, course: Course | None = None) -> SendOutcome:
        """A temporary failure: retry with backoff, or give up after max attempts."""
        with self._transaction() as connection:
            if course is not None and item.attempts >= self.settings.max_attempts:
                return self._close(
                    connection,
                    item,
                    course,
                    DeliveryStatus.FAILED,
                    error=f"gave up after {item.attempts} attempts: {error}",
                )
            deliveries.update_claimed(
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
            kind=item.kind,
            email=item.email,
            course=item.course_slug,
            day=item.key,
            attempt=item.attempts,
            error=error,
        )
        return SendOutcome.DEFERRED

    def _reject(self, item: Claimed, course: Course, error: PermanentFailure) -> SendOutcome:
        """A permanent failure: this email failed; a rejected address is suppressed."""
        with self._transaction() as connection:
            outcome = self._close(connection, item, course, DeliveryStatus.FAILED, error=str(error))
            if not error.suppress:
                return outcome
            self.sender.refused(connection, item, error.response, self.now)
        return SendOutcome.SUPPRESSED

    def _release(self, items: list[Claimed]) -> None:
        """Give back claims never attempted: due again at once, the attempt not counted."""
        with self._transaction() as connection:
            for item in items:
                deliveries.release(connection, item)


def _removed(item: Claimed, course: Course) -> str | None:
    """Why this email no longer exists in its course, if it does not."""
    if item.kind == EmailKind.LESSON and course.day(item.day_id) is None:
        return "day removed"
    if item.kind == EmailKind.AFTER_COURSE and course.after_course is None:
        return "after_course removed"
    return None


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
