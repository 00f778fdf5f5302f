"""SQLite tuned for several processes sharing one file: WAL, a busy timeout, foreign keys
on, and every writing transaction opened with ``BEGIN IMMEDIATE``, so a writer takes the
lock up front instead of failing half-way when it upgrades from reading.

A connection with the ``READ_ONLY`` execution option begins a plain (deferred)
transaction instead: in WAL mode it never waits for a writer. ``BUSY_MS`` sets how long
one transaction may wait for the write lock; ``URGENT`` marks a transaction someone is
waiting for (a web request), which goes before background writers.

Within one process, writers to the same file also take a ``threading`` lock before
``BEGIN IMMEDIATE``: a thread waiting for another thread's transaction is woken the
moment it ends, instead of sleeping in SQLite's busy handler (1, 2, 5, 10 … ms between
retries). Another process's write lock is tried for again after 0.2 ms, then twice as
long each time up to 5 ms, until the transaction's wait is over. It is hooked in
through SQLAlchemy's event API: the ``begin`` event takes it and opens the transaction,
the ``commit`` and ``rollback`` events end the transaction themselves and then let the
next writer in (the driver's own ``commit()``/``rollback()`` that SQLAlchemy calls next
find no transaction open and do nothing), and the pool's ``reset``, ``close`` and
``invalidate`` events let go of it for a connection put away or lost.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from drip.core.exceptions import ConfigError, DatabaseBusy

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: execution option: this connection only reads (SQLite: no write lock is taken)
READ_ONLY = "drip_read_only"
#: execution option: milliseconds the next transaction may wait for a lock
BUSY_MS = "drip_busy_ms"
#: execution option: someone is waiting for this transaction (goes before background work)
URGENT = "drip_urgent"


class _WriteLock:
    """One writing transaction at a time per SQLite file in this process.

    An ``URGENT`` transaction (a web request someone is waiting for) goes before
    background ones: while one waits, background writers let it have the lock first.
    """

    def __init__(self) -> None:
        self._free = threading.Condition()
        self._holder: int | None = None  #: id() of the DBAPI connection holding it
        self._urgent_waiting = 0

    def acquire(self, raw: object, timeout: float, *, urgent: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        with self._free:
            if urgent:
                self._urgent_waiting += 1
            try:
                ready = self._free.wait_for(
                    lambda: self._holder is None and (urgent or not self._urgent_waiting),
                    max(0.0, deadline - time.monotonic()),
                )
                if ready:
                    self._holder = id(raw)
                return ready
            finally:
                if urgent:
                    self._urgent_waiting -= 1
                    self._free.notify_all()

    def release(self, raw: object) -> None:
        """Let the next writer in, if ``raw`` (a DBAPI connection) holds the lock."""
        with self._free:
            if self._holder == id(raw):
                self._holder = None
                self._free.notify_all()


_write_locks: dict[str, _WriteLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(database: str) -> _WriteLock:
    key = str(Path(database).resolve())
    with _write_locks_guard:
        return _write_locks.setdefault(key, _WriteLock())


def _busy(error: sqlite3.Error) -> bool:
    return "locked" in str(error) or "busy" in str(error)


#: the first and the longest pause between two tries for another process's write lock
FIRST_RETRY_SECONDS = 0.0002
LONGEST_RETRY_SECONDS = 0.005


def _begin_immediate(raw: Any, deadline: float) -> None:
    """``BEGIN IMMEDIATE``, tried again until ``deadline`` while another process holds
    the write lock: after 0.2 ms at first, twice as long each time up to 5 ms. (SQLite's
    own busy handler sleeps 1, 2, 5, 10 … ms, where another process's transaction, the
    receipts of a window, say, often takes under one.)"""
    raw.execute("PRAGMA busy_timeout=0")
    try:
        pause = FIRST_RETRY_SECONDS
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                left = deadline - time.monotonic()
                if not _busy(error) or left <= 0:
                    raise
                time.sleep(min(pause, left))
                pause = min(2 * pause, LONGEST_RETRY_SECONDS)
    finally:
        try:
            raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        except BaseException:
            if raw.in_transaction:  # never a transaction open with the lock let go
                raw.execute("ROLLBACK")
            raise


def sqlite_engine(database_url: str, *, pool_size: int) -> Engine:
    """An engine for a SQLite file, with the pragmas, ``BEGIN IMMEDIATE`` and the
    in-process writer lock (the module docstring)."""
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise ConfigError(
            "DRIP_DATABASE_URL: an in-memory SQLite database loses everything on exit and "
            "cannot be shared; name a file, e.g. sqlite:///./drip.db"
        )
    engine = create_engine(
        database_url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=pool_size,
        max_overflow=pool_size,
    )
    lock = _write_lock(database)

    @event.listens_for(engine, "connect")
    def _on_connect(raw: Any, _record: Any) -> None:
        # Let the "begin" event below, not pysqlite, decide how transactions start.
        raw.isolation_level = None
        cursor = raw.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA cache_size=-32000")  # 32 MB: index pages stay cached
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        raw = connection.connection.dbapi_connection
        assert raw is not None
        if options.get(READ_ONLY):
            raw.execute("BEGIN")
            return
        wait_ms = int(options.get(BUSY_MS, SQLITE_BUSY_TIMEOUT_MS))
        deadline = time.monotonic() + wait_ms / 1000
        if not lock.acquire(raw, timeout=wait_ms / 1000, urgent=bool(options.get(URGENT))):
            raise DatabaseBusy("the database is locked by another transaction in this process")
        try:
            _begin_immediate(raw, deadline)
        except sqlite3.OperationalError as error:
            lock.release(raw)
            if _busy(error):
                raise DatabaseBusy("the database is locked by another process") from error
            raise OperationalError("BEGIN IMMEDIATE", None, error) from error
        except BaseException:
            lock.release(raw)
            raise

    @event.listens_for(engine, "commit")
    def _on_commit(connection: Connection) -> None:
        raw = connection.connection.dbapi_connection
        if raw is None:
            return
        try:
            if raw.in_transaction:
                raw.execute("COMMIT")
        except sqlite3.Error as error:  # nothing was written: never leave it half open
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            if _busy(error):
                raise DatabaseBusy("the database stayed locked past the commit") from error
            raise OperationalError("COMMIT", None, error) from error
        finally:
            lock.release(raw)

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection: Connection) -> None:
        raw = connection.connection.dbapi_connection if not connection.invalidated else None
        if raw is None:
            return
        try:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
        finally:
            lock.release(raw)

    def _let_go(raw: Any, *_: Any) -> None:
        """A connection put back in the pool, closed or lost holds the lock no more."""
        lock.release(raw)

    for name in ("reset", "close", "invalidate", "close_detached"):
        event.listen(engine, name, _let_go)
    return engine
