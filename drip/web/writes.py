"""The web tier's database writes: off the event loop, few at a time, bounded in time.

A request that must write waits for a slot (one at a time on SQLite, which has a single
writer anyway, so threads never queue inside SQLite's busy handler), then runs its
transaction in a worker thread. The whole wait, slot and database lock together, is
bounded by ``DRIP_DB_WAIT_SECONDS``: past it the request gets ``DatabaseBusy`` (a 503
with ``Retry-After``) and the transaction is rolled back, so nothing is half-written.
Requests that only read never take a slot, so pages and ``/healthz`` stay fast while
another process holds the write lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from drip.db import BUSY_MS
from drip.exceptions import DatabaseBusy

T = TypeVar("T")


class WriteGate:
    def __init__(self, engine: Engine, *, wait_seconds: float, concurrency: int) -> None:
        self.engine = engine
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` in one transaction in a worker thread; its result."""
        deadline = time.monotonic() + self.wait_seconds
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.wait_seconds)
        except TimeoutError:
            raise DatabaseBusy("the database is busy; try again in a moment") from None
        try:
            return await anyio.to_thread.run_sync(self._transaction, work, deadline)
        finally:
            self._slots.release()

    def _transaction(self, work: Callable[[Connection], T], deadline: float) -> T:
        wait_ms = max(1, int((deadline - time.monotonic()) * 1000))
        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(**{BUSY_MS: wait_ms})
                with connection.begin():
                    if connection.dialect.name == "postgresql":
                        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {wait_ms}")
                    return work(connection)
        except (OperationalError, PoolTimeout) as error:
            # locked past the wait, or the database unreachable: either way, not now
            raise DatabaseBusy("the database is busy; try again in a moment") from error
