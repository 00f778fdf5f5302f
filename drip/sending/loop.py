"""The long-running send loops: ``drip run`` / ``drip serve --scheduler`` on APScheduler 3,
the web process's ``PromptSender`` for emails a visitor is waiting for, and the
``WebhookLoop`` that posts events to webhook endpoints in both.

One interval job calls ``Sender.send_due`` with the clock's ``now``; ``max_instances=1``
and ``coalesce=True`` mean a slow run is never overlapped by the next, and missed ticks
collapse into one. Stopping sets ``Sender.stopping`` so the run in progress ends after
the message in flight, and releases the claims it has not started.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from drip.core.exceptions import DripError
from drip.core.logs import log_event
from drip.sending.engine import RunReport, Sender
from drip.sending.webhooks import Dispatcher

logger = logging.getLogger("drip.loop")
JOB_ID = "drip-send-due"


def tick(sender: Sender) -> None:
    """One scheduled run; errors are logged, never allowed to kill the loop."""
    try:
        sender.send_due(now=datetime.now(UTC))
    except DripError as error:
        log_event(logger, logging.ERROR, "send-due-error", error=str(error))
    except Exception:  # keep the loop alive; the traceback goes to the log
        logger.exception("event=send-due-crash")


def make_scheduler(sender: Sender, *, interval_seconds: int, background: bool) -> BaseScheduler:
    scheduler: BaseScheduler = (BackgroundScheduler if background else BlockingScheduler)(
        timezone=UTC
    )
    scheduler.add_job(
        tick,
        "interval",
        args=[sender],
        id=JOB_ID,
        seconds=interval_seconds,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=interval_seconds,
        next_run_time=datetime.now(UTC),  # first run at once, not after one interval
    )
    return scheduler


def run_now(scheduler: BaseScheduler) -> None:
    """Start the next run at once instead of at its time."""
    job = scheduler.get_job(JOB_ID)
    if job is not None:
        job.modify(next_run_time=datetime.now(UTC))


def stop(scheduler: BaseScheduler, sender: Sender) -> None:
    """Finish the message in flight, release the rest, then stop the scheduler."""
    sender.stopping.set()
    if scheduler.running:
        scheduler.shutdown(wait=True)


class PromptSender:
    """Sends confirmations, welcomes and goodbyes within moments of being queued.

    The web process calls ``wake()`` after each request that may have queued one; a
    single background thread then runs a transactional-only ``send_due`` (lessons are
    left to ``send-due`` / ``drip run``). Wakes arriving during a run collapse into one
    more run, so there is never more than one run at a time. Unwoken, it also runs every
    ``idle_seconds``: what an unreachable mail server left is retried, and course edits
    (read again at the start of each run) are picked up.
    """

    def __init__(
        self,
        sender: Sender,
        *,
        idle_seconds: float,
        batch_limit: int = 1000,
        after_run: Callable[[], object] | None = None,
    ) -> None:
        self.sender = sender
        #: called after each run (the webhook loop's wake: a run may have told of events)
        self.after_run = after_run
        self.idle_seconds = idle_seconds
        self.batch_limit = batch_limit
        self._changed = threading.Condition()
        self._woken = 0  #: wakes so far
        #: enrollments whose due emails, lessons included, go with the next run (a day 1)
        self._enrollments: set[int] = set()
        self._covered = 0  #: wakes whose run has finished
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="drip-prompt", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, *, enrollment_id: int | None = None) -> None:
        """Send what requests queued, at once; with ``enrollment_id``, that enrollment's
        lesson due now too (day 1 for someone who just confirmed: they are waiting)."""
        with self._changed:
            self._woken += 1
            if enrollment_id is not None:
                self._enrollments.add(enrollment_id)
            self._changed.notify_all()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the message in flight, release the rest, and end the thread."""
        self.sender.stopping.set()
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every wake so far has been followed by a finished run (True), or
        ``timeout`` passes (False)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._covered >= self._woken or self._stopping, timeout
            )

    def _loop(self) -> None:
        more = False
        while True:
            with self._changed:
                if not more:
                    self._changed.wait_for(
                        lambda: self._stopping or self._woken > self._covered,
                        self.idle_seconds,
                    )
                if self._stopping:
                    return
                target = self._woken
            report = self._run()
            if self.after_run is not None:
                self.after_run()
            # a run that used up its limit has left more behind: go on at once
            more = report is not None and sum(report.counts.values()) >= self.batch_limit
            if not more:
                with self._changed:
                    self._covered = target
                    self._changed.notify_all()

    def _run(self) -> RunReport | None:
        with self._changed:
            enrollments, self._enrollments = self._enrollments, set()
        try:
            report = self.sender.send_due(now=datetime.now(UTC), limit=self.batch_limit)
            if enrollments:
                self.sender.send_due(now=datetime.now(UTC), enrollment_ids=enrollments)
            return report
        except DripError as error:
            log_event(logger, logging.ERROR, "prompt-send-error", error=str(error))
        except Exception:  # keep the thread alive; the traceback goes to the log
            logger.exception("event=prompt-send-crash")
        return None


class WebhookLoop:
    """Posts webhook messages as they fall due, in a thread of its own (so lessons and
    confirmations never wait for a slow endpoint): every ``interval_seconds``, and at once
    when woken."""

    def __init__(self, dispatcher: Dispatcher, *, interval_seconds: float = 5.0) -> None:
        self.dispatcher = dispatcher
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drip-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._woken.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Post nothing more; the messages in flight are settled (each waits at most its
        timeout), the rest wait for the next process."""
        self._stop.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.dispatcher.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatcher.run_due(datetime.now(UTC), stop=self._stop)
            except DripError as error:
                log_event(logger, logging.ERROR, "webhooks-error", error=str(error))
            except Exception:  # keep the thread alive; the traceback goes to the log
                logger.exception("event=webhooks-crash")
            self._woken.wait(self.interval_seconds)
            self._woken.clear()
