"""The web tier's database writes: off the event loop, committed in groups, bounded in time.

Requests that must write hand their work to one writer, which runs whatever has queued
up in a single transaction in a worker thread, each request's work in its own
savepoint (one that fails is rolled back alone and its request gets the error), and
commits once for all of them. Requests queue on the event loop, never inside SQLite's
busy handler, and a burst of signups costs one commit instead of one each.

The wait is bounded by ``DRIP_DB_WAIT_SECONDS``: work not started by then is dropped
and its request gets ``DatabaseBusy`` (a 503 with ``Retry-After``); a group that cannot
get the database lock within what is left of its oldest request's wait is rolled back,
and every request in it gets ``DatabaseBusy``. Either way nothing is half-written.
Requests that only read never queue here, so pages and ``/healthz`` stay fast while
another process holds the write lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from drip.core.exceptions import DatabaseBusy
from drip.store.engine import BUSY_MS, URGENT

T = TypeVar("T")
#: most requests committed together
GROUP_SIZE = 64


@dataclass
class _Work:
    run: Callable[[Connection], Any]
    deadline: float
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    result: Any = None
    error: BaseException | None = None


class WriteGate:
    def __init__(self, engine: Engine, *, wait_seconds: float) -> None:
        self.engine = engine
        self.wait_seconds = wait_seconds
        self._queue: list[_Work] = []
        self._writer: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` in a transaction (shared with other requests' work, in
        a savepoint of its own) and return its result, or raise what it raised."""
        item = _Work(work, time.monotonic() + self.wait_seconds)
        self._queue.append(item)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        result: T = await item.done
        return result

    async def _write(self) -> None:
        """Commit what has queued, group after group, until the queue is empty."""
        while self._queue:
            now = time.monotonic()
            group: list[_Work] = []
            late: list[_Work] = []
            for item in self._queue[:GROUP_SIZE]:
                (group if item.deadline > now else late).append(item)
            del self._queue[: len(group) + len(late)]
            for item in late:
                item.done.set_exception(_busy())
            if group:
                try:
                    await anyio.to_thread.run_sync(self._commit, group)
                except Exception as error:  # never leave a request waiting forever
                    for item in group:
                        item.error = error
                for item in group:
                    if item.error is not None:
                        item.done.set_exception(item.error)
                    else:
                        item.done.set_result(item.result)

    def _commit(self, group: list[_Work]) -> None:
        """In a worker thread: one transaction, a savepoint per request."""
        wait_ms = max(1, int((min(item.deadline for item in group) - time.monotonic()) * 1000))
        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(**{BUSY_MS: wait_ms, URGENT: True})
                with connection.begin():
                    if connection.dialect.name == "postgresql":
                        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {wait_ms}")
                    for item in group:
                        try:
                            with connection.begin_nested():
                                item.result = item.run(connection)
                        except (OperationalError, PoolTimeout, DatabaseBusy):
                            raise  # the database itself: the whole group fails
                        except Exception as error:  # this request's own error
                            item.error = error
        except (OperationalError, PoolTimeout, DatabaseBusy) as error:
            # locked past the wait, or the database unreachable: either way, not now
            for item in group:
                item.error = _busy()
                item.error.__cause__ = error


def _busy() -> DatabaseBusy:
    return DatabaseBusy("the database is busy; try again in a moment")
