"""The SQLite writer lock (``drip.store.sqlite``): one writing transaction at a time per
file in a process, taken at ``begin`` and given back at every way a transaction ends,
through SQLAlchemy's event API."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from drip.core.exceptions import DatabaseBusy
from drip.store.engine import BUSY_MS, READ_ONLY, URGENT, make_engine


@pytest.fixture
def db(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        connection.execute(
            text("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent)")
        )
        connection.execute(text("CREATE TABLE note (value TEXT)"))
    return engine


def _writes_at_once(engine: Engine) -> bool:
    """Can a writer in another thread begin within 0.2 s (the lock is free)?"""
    outcome: list[bool] = []

    def write() -> None:
        try:
            with engine.connect() as connection:
                connection = connection.execution_options(**{BUSY_MS: 200})
                with connection.begin():
                    connection.execute(text("INSERT INTO note VALUES ('other')"))
            outcome.append(True)
        except DatabaseBusy:
            outcome.append(False)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(timeout=10)
    return outcome == [True]


def test_a_writer_waits_for_another_threads_transaction(db: Engine) -> None:
    """While one thread's writing transaction is open, another thread's writer waits for
    it in this process and gives up after its wait ("in this process"): SQLite's own busy
    handler is never reached."""
    with db.connect() as connection, connection.begin():
        connection.execute(text("INSERT INTO note VALUES ('mine')"))
        with pytest.raises(DatabaseBusy, match="in this process"):
            with db.connect() as other:
                other.execution_options(**{BUSY_MS: 100}).begin()
        assert not _writes_at_once(db)
    assert _writes_at_once(db)


def _held_by_another_process(path: Path, seconds: float) -> tuple[threading.Thread, list[float]]:
    """SQLite's write lock on ``path`` taken at once and held for ``seconds`` by a
    connection outside this process's lock (as another process's would be); the thread
    and, once it let go, the moment it did."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released: list[float] = []

    def hold() -> None:
        time.sleep(seconds)
        holder.execute("COMMIT")
        released.append(time.perf_counter())
        holder.close()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread, released


def test_a_writer_waits_for_another_process_until_its_wait_is_over(
    db: Engine, tmp_path: Path
) -> None:
    """Another process's write lock is waited for (tried again and again) until it is
    free, or until the transaction's wait is over ("another process"); either way the
    connection's busy timeout is the usual one after."""
    path = tmp_path / "lock.db"
    thread, _ = _held_by_another_process(path, 0.3)
    with db.connect() as connection:
        with connection.execution_options(**{BUSY_MS: 10_000}).begin():
            connection.execute(text("INSERT INTO note VALUES ('after')"))
        raw = connection.connection.dbapi_connection
        assert raw is not None and raw.execute("PRAGMA busy_timeout").fetchone() == (30_000,)
    thread.join()
    thread, _ = _held_by_another_process(path, 1.0)
    started = time.perf_counter()
    with db.connect() as connection:
        with pytest.raises(DatabaseBusy, match="another process"):
            connection.execution_options(**{BUSY_MS: 200}).begin()
        assert 0.2 <= time.perf_counter() - started < 0.6
        raw = connection.connection.dbapi_connection
        assert raw is not None and raw.execute("PRAGMA busy_timeout").fetchone() == (30_000,)
    thread.join()


@pytest.mark.timing
def test_a_writer_gets_in_soon_after_another_process_lets_go(db: Engine, tmp_path: Path) -> None:
    """Within a few milliseconds, where SQLite's own busy handler, sleeping 1, 2, 5, 10 …
    50, 100 ms, would try again up to 28 ms after a lock held for 0.3 s is let go."""
    thread, released = _held_by_another_process(tmp_path / "lock.db", 0.3)
    with db.connect() as connection, connection.begin():
        began = time.perf_counter()
    thread.join()
    assert began - released[0] < 0.015


def test_the_lock_is_given_back_when_a_transaction_rolls_back(db: Engine) -> None:
    """An error inside a transaction rolls it back and lets the next writer in at once,
    while the connection stays open (a sender keeps its connection for the whole run)."""
    with db.connect() as connection:
        with pytest.raises(RuntimeError), connection.begin():
            connection.execute(text("INSERT INTO note VALUES ('gone')"))
            raise RuntimeError("boom")
        assert _writes_at_once(db)
    with db.connect() as connection:
        assert connection.execute(text("SELECT value FROM note")).scalars().all() == ["other"]


def test_a_connection_put_back_mid_transaction_lets_go_of_the_lock(db: Engine) -> None:
    """A connection closed with its transaction still open (never committed) is rolled
    back by the pool, and the lock is free again."""
    connection = db.connect()
    connection.begin()
    connection.execute(text("INSERT INTO note VALUES ('dropped')"))
    connection.close()
    assert _writes_at_once(db)
    with db.connect() as reader:
        assert reader.execute(text("SELECT value FROM note")).scalars().all() == ["other"]


def test_a_connection_lost_mid_transaction_lets_go_of_the_lock(db: Engine) -> None:
    """A connection invalidated with its transaction open (its socket or file gone, as
    SQLAlchemy sees it) frees the lock: the next writer does not wait for it."""
    connection = db.connect()
    connection.begin()
    connection.execute(text("INSERT INTO note VALUES ('lost')"))
    connection.invalidate()
    assert _writes_at_once(db)
    connection.close()


def test_a_failed_commit_writes_nothing_and_lets_the_next_writer_in(db: Engine) -> None:
    """A COMMIT SQLite refuses (here a deferred foreign key left broken) raises, leaves no
    transaction open on the connection and nothing written, and frees the lock."""
    with db.connect() as connection:
        with pytest.raises(DBAPIError, match="FOREIGN KEY"), connection.begin():
            connection.execute(text("PRAGMA defer_foreign_keys = ON"))
            connection.execute(text("INSERT INTO child VALUES (1, 42)"))
        assert not connection.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
        assert _writes_at_once(db)
        with connection.begin():  # the same connection writes again
            connection.execute(text("INSERT INTO parent VALUES (1)"))
    with db.connect() as reader:
        assert reader.execute(text("SELECT count(*) FROM child")).scalar() == 0
        assert reader.execute(text("SELECT count(*) FROM parent")).scalar() == 1


@pytest.mark.timing
def test_a_reader_never_waits_for_a_writer(db: Engine) -> None:
    """A READ_ONLY connection reads while a writer holds the lock (WAL: a plain BEGIN)."""
    with db.connect() as writer, writer.begin():
        writer.execute(text("INSERT INTO note VALUES ('pending')"))
        started = time.monotonic()
        with db.connect() as reader:
            reader = reader.execution_options(**{READ_ONLY: True, BUSY_MS: 100})
            with reader.begin():
                assert reader.execute(text("SELECT count(*) FROM note")).scalar() == 0
        assert time.monotonic() - started < 1


def test_an_urgent_writer_goes_before_background_writers(db: Engine) -> None:
    """When the lock comes free, a waiting URGENT transaction (a web request) takes it
    before a background writer that was waiting first."""
    order: list[str] = []
    waiting = threading.Barrier(3)

    def write(name: str, urgent: bool) -> None:
        with db.connect() as connection:
            connection = connection.execution_options(**{URGENT: urgent})
            waiting.wait()
            if urgent:
                time.sleep(0.2)  # the background writer is surely waiting already
            with connection.begin():
                order.append(name)

    threads = [
        threading.Thread(target=write, args=("background", False)),
        threading.Thread(target=write, args=("urgent", True)),
    ]
    with db.connect() as holder, holder.begin():
        holder.execute(text("INSERT INTO note VALUES ('first')"))
        for thread in threads:
            thread.start()
        waiting.wait()
        time.sleep(0.5)  # both are waiting now
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["urgent", "background"]
