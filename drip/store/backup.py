"""Backups and moves: a SQLite file copied while drip runs, and a whole database copied
from SQLite to PostgreSQL (or back) with nothing lost or resent.

``backup_sqlite`` uses SQLite's online backup API: it copies a consistent snapshot page
by page while serving and sending go on. ``copy_database`` copies every table, rows
and ids alike, into an empty database at the same schema revision, so every delivery
keeps its status and receipt: a lesson sent before the move is never sent again after.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from drip.core.exceptions import ConfigError
from drip.store import tallies
from drip.store.engine import READ_ONLY
from drip.store.schema import current_revision, head_revision

#: every table but the tallies, parents before children (foreign keys point backwards in
#: this list)
TABLES = (
    "setting",
    "subscriber",
    "signup",
    "enrollment",
    "delivery",
    "click",
    "mailevent",
    "webhookevent",
    "apikey",
    "webhookendpoint",
    "webhookmessage",
)
BATCH = 5000


def key_file_for(backup: Path) -> Path:
    """Where a backup's signing key is written: beside it, ``BACKUP.key``."""
    return backup.with_name(backup.name + ".key")


def _new_private_file(path: Path, what: str) -> None:
    """Create ``path`` empty and private (0600); it must not exist, not even as a link."""
    if path.exists() or path.is_symlink():
        raise ConfigError(f"{path} already exists: choose a new file for the {what}")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except OSError as error:
        raise ConfigError(f"cannot write the {what} {path}: {error.strerror}") from None


def backup_sqlite(database: Path, target: Path, *, key_file: Path | None = None) -> Path | None:
    """Copy the SQLite file ``database`` to ``target`` (a new file, 0600) while in use,
    and the generated signing key ``key_file``, when there is one, beside it (0600): a
    copy restored without its key would not verify the links in emails already sent.
    Returns where the key was written."""
    if not database.exists():
        raise ConfigError(f"no database at {database}")
    key_target = key_file_for(target) if key_file is not None and key_file.exists() else None
    _new_private_file(target, "backup")
    if key_target is not None:
        try:
            _new_private_file(key_target, "backup's key")
        except ConfigError:
            target.unlink()
            raise
    source = sqlite3.connect(database)
    copy = sqlite3.connect(target)
    try:
        with copy:
            source.backup(copy, pages=1024)  # in steps: writers are never held up for long
        if copy.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise ConfigError(f"{target}: the copy failed its integrity check")
    except BaseException:
        copy.close()
        target.unlink(missing_ok=True)
        if key_target is not None:
            key_target.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    copy.close()
    if key_target is not None and key_file is not None:
        key_target.write_text(key_file.read_text())
    return key_target


def pg_dump_command(database_url: str, target: Path) -> str:
    """The ``pg_dump`` command that backs a PostgreSQL database up to ``target``."""
    url = make_url(database_url).set(drivername="postgresql")
    return shlex.join(
        [
            "pg_dump",
            "--format=custom",
            f"--file={target}",
            url.render_as_string(hide_password=False),
        ]
    )


def copy_database(source: Engine, target: Engine) -> dict[str, int]:
    """Copy every row of every table from ``source`` into the empty ``target``; returns
    rows copied per table. Both must be at the newest schema revision."""
    for engine, name in ((source, "the source"), (target, "the target")):
        if current_revision(engine) != head_revision():
            raise ConfigError(f"{name} database is not at the newest schema: run `drip db upgrade`")
    tables = SQLModel.metadata.tables

    def rows_of(name: str) -> Select[Any]:
        """A table's rows but the setting naming each database's own counting triggers."""
        query = select(tables[name])
        if name == "setting":
            query = query.where(tables[name].c.name != tallies.INSTALLED)
        return query

    with target.connect() as connection:
        for name in TABLES:
            if connection.execute(
                select(func.count()).select_from(rows_of(name).subquery())
            ).scalar():
                raise ConfigError(
                    f"the target database already has {name} rows: copy into an empty one"
                )
    copied: dict[str, int] = {}
    with source.connect() as reading, target.begin() as writing:
        # one read transaction: a consistent snapshot, even while drip keeps running
        reading = reading.execution_options(**{READ_ONLY: True})
        if reading.dialect.name == "postgresql":  # one snapshot, not one per statement
            reading = reading.execution_options(isolation_level="REPEATABLE READ")
        reading.begin()
        for name in TABLES:
            table = tables[name]
            rows = reading.execution_options(yield_per=BATCH).execute(rows_of(name))
            count = 0
            for batch in rows.partitions():
                writing.execute(insert(table), [dict(row._mapping) for row in batch])
                count += len(batch)
            copied[name] = count
        # the rows' triggers counted them as they went in; the source's tallies also hold
        # what its erased rows had counted
        tallies.replace(writing, tallies.totals(reading))
        if writing.dialect.name == "postgresql":  # new rows continue after the copied ids
            for name in TABLES:
                if "id" in tables[name].c:
                    writing.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                            f"COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)"
                        )
                    )
    return copied
