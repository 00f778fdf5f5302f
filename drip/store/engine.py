"""Opening the database: an engine for ``DRIP_DATABASE_URL`` (SQLite, ``drip.store.sqlite``,
or PostgreSQL), its schema brought up to date, and sessions.

``READ_ONLY``, ``BUSY_MS`` and ``URGENT`` are execution options a caller sets on a
connection (``connection.execution_options(**{READ_ONLY: True})``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from drip.core.config import Settings
from drip.core.exceptions import ConfigError, DatabaseBusy
from drip.store.schema import ensure_schema
from drip.store.sqlite import BUSY_MS, READ_ONLY, URGENT, sqlite_engine

__all__ = [
    "BUSY_MS",
    "READ_ONLY",
    "URGENT",
    "engine_for",
    "is_unavailable",
    "make_engine",
    "ping",
    "session_scope",
]


def make_engine(database_url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``database_url``; SQLite files get WAL, busy timeout and IMMEDIATE.

    ``pool_size`` connections are kept open, and as many again may be opened when busy.
    """
    if database_url.startswith("sqlite"):
        return sqlite_engine(database_url, pool_size=pool_size)
    try:
        return create_engine(
            database_url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size
        )
    except Exception as error:  # bad URL or missing driver
        raise ConfigError(f"DRIP_DATABASE_URL: {error}") from error


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
        relative = (
            ""
            if path.is_absolute()
            else (
                f"; that path is relative to the folder drip runs in ({Path.cwd()}): run drip "
                "from the folder that holds your database, give DRIP_DATABASE_URL an absolute "
                "path, or name your settings file with drip --env-file"
            )
        )
        raise ConfigError(
            f"no database at {where}{relative}; `drip db upgrade` creates a new, empty one there"
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


def is_unavailable(error: BaseException) -> bool:
    """Is ``error`` the database being busy (locked by another writer past the wait) or
    out of reach, rather than a mistake: worth trying again later?"""
    return isinstance(error, DatabaseBusy | OperationalError)


def ping(engine: Engine) -> None:
    """One read of the database (``/healthz``: it never waits for the write lock); raises
    when the database cannot be reached."""
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True}).execute(text("SELECT 1"))
