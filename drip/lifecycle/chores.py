"""The lifecycle's share of every send run, done before anything is sent: the signups the
web process recorded are processed (their confirmations queued), and evergreen courses
that gained days restart those who had completed them.

Each is a loop of short transactions that stops early when the run is asked to stop.
``drip.runner`` hands them to the send engine, which knows nothing of signups.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from drip.core.courses import Catalog
from drip.core.exceptions import DripError
from drip.core.logs import log_event
from drip.lifecycle.enrollment import EVERGREEN_CHUNK, extend_evergreen
from drip.lifecycle.signup import process_recorded

logger = logging.getLogger("drip.lifecycle")
#: recorded signups processed per transaction: short turns on the writer lock, because the
#: web process's signup requests wait behind each (p99 at 4 connections 19 ms, not 35;
#: a burst's confirmations drain some 10 % slower: docs/benchmarks.md)
SIGNUP_BATCH = 5


def process_signups(
    engine: Engine,
    *,
    catalog: Catalog,
    resend_gap_seconds: float,
    now: datetime,
    stopping: threading.Event,
) -> None:
    """Process recorded signups (queueing their confirmations), a batch per transaction,
    until none is left."""
    while not stopping.is_set():
        with engine.begin() as connection:
            batch = process_recorded(
                connection,
                catalog=catalog,
                now=now,
                resend_gap_seconds=resend_gap_seconds,
                limit=SIGNUP_BATCH,
            )
        if batch < SIGNUP_BATCH:
            break


def restart_evergreen(
    engine: Engine, *, catalog: Catalog, now: datetime, stopping: threading.Event
) -> None:
    """Days added to an evergreen course reach those who had completed it, a chunk per
    transaction. A database error is logged and the run goes on sending."""
    for course in catalog:
        if not course.evergreen:  # no transaction (SQLite: no write lock) for the others
            continue
        restarted, chunk = 0, EVERGREEN_CHUNK
        try:
            while chunk == EVERGREEN_CHUNK and not stopping.is_set():
                with engine.begin() as connection:
                    chunk = extend_evergreen(connection, course=course, now=now)
                restarted += chunk
        except (SQLAlchemyError, DripError) as error:
            log_event(
                logger, logging.ERROR, "evergreen-failed", course=course.slug, error=str(error)
            )
        if restarted:
            log_event(logger, logging.INFO, "evergreen", course=course.slug, restarted=restarted)
