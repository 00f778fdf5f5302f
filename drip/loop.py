"""The long-running send loop (``drip run``, ``drip serve --scheduler``) on APScheduler 3.

One interval job calls ``Sender.send_due`` with the clock's ``now``; ``max_instances=1``
and ``coalesce=True`` mean a slow run is never overlapped by the next, and missed ticks
collapse into one. Stopping sets ``Sender.stopping`` so the run in progress ends after
the message in flight, and releases the claims it has not started.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from drip.engine import Sender
from drip.exceptions import DripError
from drip.logs import log_event

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


def stop(scheduler: BaseScheduler, sender: Sender) -> None:
    """Finish the message in flight, release the rest, then stop the scheduler."""
    sender.stopping.set()
    if scheduler.running:
        scheduler.shutdown(wait=True)
