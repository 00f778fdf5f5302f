"""Engine factory, schema migrations and sessions.

SQLite is tuned for several processes sharing one file: WAL, a busy timeout, foreign
keys on, and every transaction opened with ``BEGIN IMMEDIATE`` so a writer takes the
lock up front instead of failing half-way when it upgrades from reading. A connection
with the ``READ_ONLY`` execution option begins a plain (deferred) transaction instead:
in WAL mode it never waits for a writer. ``BUSY_MS`` sets how long one transaction may
wait for the write lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Dialect, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel import Session

from drip.config import Settings
from drip.exceptions import ConfigError, SchemaOutOfDate

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: execution option: this connection only reads (SQLite: no write lock is taken)
READ_ONLY = "drip_read_only"
#: execution option: milliseconds the next transaction may wait for a lock
BUSY_MS = "drip_busy_ms"


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


def _sqlite_engine(database_url: str, pool_size: int) -> Engine:
    engine = create_engine(
        database_url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=pool_size,
        max_overflow=pool_size,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not pysqlite, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        raw = connection.connection.driver_connection
        assert raw is not None
        if BUSY_MS in options:
            raw.execute(f"PRAGMA busy_timeout={int(options[BUSY_MS])}")
        raw.execute("BEGIN" if options.get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


class Prepared:
    """A Core statement compiled once for a dialect, run straight on the DBAPI cursor.

    For the few statements the send loop runs per message, where SQLAlchemy's
    per-execution bookkeeping costs more than the database's own work. Parameters go
    through the same bind processors (type conversions) as a normal execution; rows
    come back as the driver returns them.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        self._compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = str(self._compiled)
        self._order = self._compiled.positiontup  # None for named paramstyles
        self._processors = {
            name: processor
            for bind, name in self._compiled.bind_names.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect))
        }

    def execute(self, connection: Connection, params: dict[str, Any]) -> Any:
        """Run in ``connection``'s current transaction; returns the DBAPI cursor."""
        values = dict(self._compiled.construct_params(params))
        for name, process in self._processors.items():
            values[name] = process(values[name])
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(self.sql, [values[name] for name in self._order] if self._order else values)
        return cursor


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Migrate to the newest schema; returns (revision before, revision after)."""
    before = current_revision(engine)
    command.upgrade(alembic_config(engine), "head")
    return before, current_revision(engine)


def ensure_schema(engine: Engine) -> None:
    """Upgrade a SQLite database in place; ask for ``drip db upgrade`` on a shared server.

    Several hosts may share a PostgreSQL database, so migrating it is an explicit step.
    """
    try:
        current = current_revision(engine)
    except OperationalError as error:
        raise ConfigError(f"cannot open the database: {error.orig}") from error
    if current == head_revision():
        return
    if engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"the database schema is at {current or 'nothing'}, this drip needs "
        f"{head_revision()}: run `drip db upgrade`"
    )


def engine_for(settings: Settings, *, migrate: bool = True) -> Engine:
    # each send-due worker holds one connection for its run; the rest serve everything else
    engine = make_engine(settings.database_url, pool_size=settings.smtp_connections + 3)
    if migrate:
        ensure_schema(engine)
    return engine


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
