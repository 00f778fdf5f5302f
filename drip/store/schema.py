"""The schema: Alembic migrations (``drip/store/migrations``), where a database stands,
and bringing it up to date.

A SQLite file is upgraded in place when drip opens it; several hosts may share a
PostgreSQL database, so migrating it is an explicit step (``drip db upgrade``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import OperationalError

from drip.core.exceptions import ConfigError, SchemaOutOfDate
from drip.store.sqlite import READ_ONLY

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


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
        _tallies_up_to_date(engine)
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
    head = head_revision()  # (read from the migration files: once)
    if current == head and _tallies_current(engine):
        return
    if engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    if current == head:
        raise SchemaOutOfDate(
            "the database's counting triggers are from another drip: run `drip db upgrade`"
        )
    raise SchemaOutOfDate(
        f"the database schema is at {current or 'nothing'}, this drip needs "
        f"{head}: run `drip db upgrade`"
    )


def _tallies_current(engine: Engine) -> bool:
    from drip.store import tallies

    with engine.connect() as connection:
        return tallies.is_current(connection.execution_options(**{READ_ONLY: True}))


def _tallies_up_to_date(engine: Engine) -> None:
    """The counting triggers of this drip's rules, and the counts made again if they
    were others (``drip.store.tallies``): part of every upgrade, after the migrations."""
    from drip.store import tallies

    with engine.begin() as connection:
        tallies.bring_up_to_date(connection)
