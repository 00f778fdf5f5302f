"""Engine factory, schema migrations and sessions.

SQLite is tuned for several processes sharing one file: WAL, a busy timeout, foreign
keys on, and every transaction opened with ``BEGIN IMMEDIATE`` so a writer takes the
lock up front instead of failing half-way when it upgrades from reading. A connection
with the ``READ_ONLY`` execution option begins a plain (deferred) transaction instead:
in WAL mode it never waits for a writer. ``BUSY_MS`` sets how long one transaction may
wait for the write lock.

Within one process, writers to the same SQLite file also take a ``threading.Lock``
before ``BEGIN IMMEDIATE``: a thread waiting for another thread's transaction is woken
the moment it ends, instead of sleeping in SQLite's busy handler (1, 2, 5, 10 … ms
between retries). Other processes are still waited for by the busy timeout.
"""

from __future__ import annotations

import operator
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Dialect, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel import Session

from drip.core.config import Settings
from drip.core.exceptions import ConfigError, DatabaseBusy, SchemaOutOfDate

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: execution option: this connection only reads (SQLite: no write lock is taken)
READ_ONLY = "drip_read_only"
#: execution option: milliseconds the next transaction may wait for a lock
BUSY_MS = "drip_busy_ms"
#: execution option: someone is waiting for this transaction (goes before background work)
URGENT = "drip_urgent"


def make_engine(database_url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``database_url``; SQLite files get WAL, busy timeout and IMMEDIATE.

    ``pool_size`` connections are kept open, and as many again may be opened when busy.
    """
    if database_url.startswith("sqlite"):
        return _sqlite_engine(database_url, pool_size)
    try:
        return create_engine(
            database_url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size
        )
    except Exception as error:  # bad URL or missing driver
        raise ConfigError(f"DRIP_DATABASE_URL: {error}") from error


class _WriteLock:
    """One writing transaction at a time per SQLite file in this process.

    An ``URGENT`` transaction (a web request someone is waiting for) goes before
    background ones: while one waits, background writers let it have the lock first.
    """

    def __init__(self) -> None:
        self._free = threading.Condition()
        self._holder: int | None = None  #: id() of the DBAPI connection holding it
        self._urgent_waiting = 0

    def acquire(self, connection: object, timeout: float, *, urgent: bool = False) -> bool:
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
                    self._holder = id(_dbapi(connection))
                return ready
            finally:
                if urgent:
                    self._urgent_waiting -= 1
                    self._free.notify_all()

    def release(self, connection: object) -> None:
        with self._free:
            if self._holder == id(_dbapi(connection)):
                self._holder = None
                self._free.notify_all()


def _dbapi(connection: object) -> object:
    """The driver's connection, whether given it or the pool's proxy for it."""
    return getattr(connection, "dbapi_connection", connection)


_write_locks: dict[str, _WriteLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(database: str) -> _WriteLock:
    key = str(Path(database).resolve())
    with _write_locks_guard:
        return _write_locks.setdefault(key, _WriteLock())


def _sqlite_engine(database_url: str, pool_size: int) -> Engine:
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
    dialect = engine.dialect
    commit, rollback, close = dialect.do_commit, dialect.do_rollback, dialect.do_close

    def do_commit(raw: Any) -> None:
        try:
            commit(raw)
        finally:
            lock.release(raw)

    def do_rollback(raw: Any) -> None:
        try:
            rollback(raw)
        finally:
            lock.release(raw)

    def do_close(raw: Any) -> None:
        lock.release(raw)
        close(raw)

    # this engine's own dialect instance: the lock is released once the COMMIT is done
    setattr(dialect, "do_commit", do_commit)  # noqa: B010
    setattr(dialect, "do_rollback", do_rollback)  # noqa: B010
    setattr(dialect, "do_close", do_close)  # noqa: B010

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not pysqlite, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
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
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            raw.execute(f"PRAGMA busy_timeout={left_ms}")
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            lock.release(raw)
            if "locked" in str(error) or "busy" in str(error):
                raise DatabaseBusy("the database is locked by another process") from error
            raise OperationalError("BEGIN IMMEDIATE", None, error) from error
        except BaseException:
            lock.release(raw)
            raise

    return engine


@contextmanager
def generic_plans(connection: Connection) -> Iterator[None]:
    """On PostgreSQL, plan each prepared statement once for this block, not on every
    execution (``plan_cache_mode``): for a sender's statements, which find their rows by
    key, so their best plan does not depend on the values. A plan made for the values
    would cost a planning per message, and, on a table of a few batches, can prefer
    reading every row in flight to probing the ten it names."""
    if connection.dialect.name != "postgresql":
        yield
        return
    with connection.begin():
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
    try:
        yield
    finally:
        try:
            with connection.begin():
                connection.exec_driver_sql("RESET plan_cache_mode")
        except Exception:  # a broken connection: never back to the pool with the setting
            connection.invalidate()


class Prepared:
    """A Core statement compiled once for a dialect, run straight on the DBAPI cursor.

    For the few statements run per message or per signup, where SQLAlchemy's
    per-execution bookkeeping costs more than the database's own work. Parameters go
    through the same bind processors (type conversions) as a normal execution; rows
    come back as the driver returns them (``execute``) or converted as SQLAlchemy
    would (``one_or_none``).
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = str(compiled)
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        order = compiled.positiontup  # None for named paramstyles
        self._names = list(order or binds)
        self._positional = order is not None
        #: values the statement itself fixes (literals), by the caller's key
        self._fixed = {b.key: b.value for b in binds.values() if not b.required}
        keys = [binds[name].key for name in self._names]
        self._take = operator.itemgetter(*keys) if keys else (lambda params: ())
        #: (position, type converter) of each value that needs converting
        self._convert = [
            (index, processor)
            for index, name in enumerate(self._names)
            if (processor := binds[name].type.dialect_impl(dialect).bind_processor(dialect))
        ]
        self._results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in compiled._result_columns
        ]

    def execute(self, connection: Connection, params: dict[str, Any]) -> Any:
        """Run in ``connection``'s current transaction; returns the DBAPI cursor."""
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(self.sql, self._bound(params, {}))
        return cursor

    def one_or_none(self, connection: Connection, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row, its values converted (aware datetimes …), or None."""
        row = self.execute(connection, params).fetchone()
        if row is None:
            return None
        return tuple(
            process(value) if process else value
            for process, value in zip(self._results, row, strict=True)
        )

    def read_alone(self, connection: Connection, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of this read, run as a statement of its own, outside any
        transaction: one round trip, no BEGIN or COMMIT (nor SQLite's write lock) for a
        single read. ``connection`` must not be in a transaction. Values as the driver
        returns them."""
        if connection.in_transaction():
            raise RuntimeError("read_alone runs outside a transaction")
        driver = connection.connection.driver_connection
        # SQLite's driver is in autocommit mode already (see make_engine); psycopg's is
        # switched for this one statement (a client-side setting: no round trip)
        switch = connection.dialect.name == "postgresql" and not driver.autocommit  # type: ignore[union-attr]
        if switch:
            driver.autocommit = True  # type: ignore[union-attr]
        try:
            cursor = driver.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(self.sql, self._bound(params, {}))
                return cursor.fetchone()  # type: ignore[no-any-return]
            finally:
                cursor.close()
        finally:
            if switch and not driver.closed:  # type: ignore[union-attr]
                driver.autocommit = False  # type: ignore[union-attr]

    def executemany(self, connection: Connection, rows: Iterable[dict[str, Any]]) -> None:
        """Run once per parameter set, in one driver call."""
        converted: dict[tuple[int, Any], Any] = {}
        bound = [self._bound(params, converted) for params in rows]
        if bound:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(self.sql, bound)

    def _bound(self, params: dict[str, Any], converted: dict[tuple[int, Any], Any]) -> Any:
        taken = self._take({**self._fixed, **params} if self._fixed else params)
        values = list(taken) if len(self._names) > 1 else [taken]
        for index, process in self._convert:
            value = values[index]
            if isinstance(value, datetime):  # the same ``now`` in every row: convert once
                memo = (index, value)
                if memo not in converted:
                    converted[memo] = process(value)
                values[index] = converted[memo]
            else:
                values[index] = process(value)
        return values if self._positional else dict(zip(self._names, values, strict=True))


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str | None:
    """The newest migration's revision, read from the migration files (without loading
    Alembic: every command checks this, most have nothing to migrate)."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = dict(_REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        if "revision" in found:
            revisions.add(found["revision"])
            parents.add(found.get("down_revision"))
    heads = revisions - parents
    if len(heads) > 1:
        raise RuntimeError(f"several migration heads: {sorted(heads)}")
    return heads.pop() if heads else None


_REVISION_LINE = re.compile(r'^(revision|down_revision)\s*=\s*"([^"]+)"', re.MULTILINE)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: no schema yet)."""
    with engine.connect() as connection:
        connection = connection.execution_options(**{READ_ONLY: True})
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Migrate to the newest schema; returns (revision before, revision after)."""
    from alembic import command

    try:
        before = current_revision(engine)
        command.upgrade(alembic_config(engine), "head")
        return before, current_revision(engine)
    except OperationalError as error:
        raise ConfigError(f"cannot open the database: {_first_line(error.orig)}") from None


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def ensure_schema(engine: Engine) -> None:
    """Upgrade a SQLite database in place; ask for ``drip db upgrade`` on a shared server.

    Several hosts may share a PostgreSQL database, so migrating it is an explicit step.
    """
    try:
        current = current_revision(engine)
    except OperationalError as error:
        raise ConfigError(f"cannot open the database: {_first_line(error.orig)}") from None
    if current == head_revision():
        return
    if engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"the database schema is at {current or 'nothing'}, this drip needs "
        f"{head_revision()}: run `drip db upgrade`"
    )


def engine_for(settings: Settings, *, migrate: bool = True, create: bool = True) -> Engine:
    """The engine for ``settings``, its schema up to date (``migrate``). Without
    ``create``, a SQLite file that does not exist yet is an error naming where it was
    looked for, instead of a new empty database."""
    path = settings.sqlite_path()
    if path is not None:
        _sqlite_file(path, settings.database_url, create=create)
    # each send-due worker holds one connection for its run; the rest serve everything else
    engine = make_engine(settings.database_url, pool_size=settings.smtp_connections + 3)
    if migrate:
        ensure_schema(engine)
    return engine


def _sqlite_file(path: Path, url: str, *, create: bool) -> None:
    """Make sure the database file exists: created private (0600) like the key file."""
    if path.exists():
        return
    where = f"{path.resolve()} (DRIP_DATABASE_URL={url})"
    if not create:
        raise ConfigError(
            f"no database at {where}: run `drip db upgrade` to create it, or point "
            "DRIP_DATABASE_URL at your database"
        )
    if not path.resolve().parent.is_dir():
        raise ConfigError(f"cannot create the database {where}: the directory does not exist")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass  # created meanwhile by another process
    except OSError as error:
        raise ConfigError(f"cannot create the database {where}: {error.strerror}") from None


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def insert_for(dialect: Dialect) -> Any:
    """The dialect's own ``insert`` (PostgreSQL's or SQLite's), which knows
    ``ON CONFLICT``."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if dialect.name == "postgresql" else sqlite.insert


def insert_new(
    connection: Connection, table: Any, values: dict[str, Any], *, unique: list[str]
) -> bool:
    """Insert the row unless one with the same ``unique`` columns exists; True if it was
    new."""
    statement = insert_for(connection.dialect)(table).values(**values)
    result = connection.execute(statement.on_conflict_do_nothing(index_elements=unique))
    return bool(result.rowcount == 1)
