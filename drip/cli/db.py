"""``drip db``: the database schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drip.cli._common import DripGroup, console, engine, say, settings

app = typer.Typer(cls=DripGroup, no_args_is_help=True, help="The database: schema, backups, moves.")


@app.command()
def upgrade() -> None:
    """Create or migrate the schema to the newest version.

    Example: drip db upgrade
    """
    from drip.store import engine as db
    from drip.store import schema

    engine = db.engine_for(settings(), migrate=False, create=True)
    before, after = schema.upgrade(engine)
    if before == after:
        console().print(f"database is up to date (revision {after})")
    else:
        console().print(f"database upgraded from {before or 'empty'} to {after}")


@app.command()
def recount() -> None:
    """Count the dashboard's, stats' and /metrics' figures again from the rows.

    The triggers that keep them are made anew: for a database whose rows were changed by
    hand. The metrics' counters never go down.

    Example: drip db recount
    """
    from drip.store import tallies

    with engine().begin() as connection:
        tallies.install(connection)
        changes = tallies.count_again(connection)
    if not changes:
        say("every count was right")
        return
    for (name, labels), n in sorted(changes.items()):
        say(f"{name} {labels or '-'}: {n:+d}")


@app.command()
def backup(
    path: Annotated[Path, typer.Argument(help="The backup file to write (must not exist).")],
) -> None:
    """Back the database up. SQLite: a consistent copy made while serving and sending go
    on, with the generated signing key beside it (PATH.key); restore both as
    docs/deployment.md shows. PostgreSQL: prints the pg_dump command to run. Either way the
    signing key must be kept with the backup: links in emails already sent need it.

    Example: drip db backup /backups/drip-2026-11-25.db
    """
    from drip.store.backup import backup_sqlite, pg_dump_command

    config = settings()
    database = config.sqlite_path()
    if database is None:
        say(pg_dump_command(config.database_url, path))
        say(f"and keep DRIP_SECRET_KEY with it: {KEY_NEEDED}")
        return
    key = backup_sqlite(database, path, key_file=config.generated_key_file())
    say(f"backed up {database} to {path}")
    if key is not None:
        say(f"and its signing key to {key} (0600): restore it as drip-secret.key with it")
    else:
        say(f"keep DRIP_SECRET_KEY with the backup: {KEY_NEEDED}")


#: why a backup is worth little without its signing key
KEY_NEEDED = "every link in emails already sent was signed with it"


@app.command()
def copy(
    to: Annotated[str, typer.Option("--to", help="The empty database to copy into (a URL).")],
) -> None:
    """Copy every subscriber, signup, enrollment and email (sent, queued and failed) into
    another database, e.g. from SQLite to PostgreSQL when one machine is no longer
    enough. The target is migrated first and must be empty; afterwards point
    DRIP_DATABASE_URL at it: nothing is lost, nothing already sent goes out again.

    Example: drip db copy --to postgresql+psycopg://drip:secret@db.example/drip
    """
    from drip.store import engine as db
    from drip.store import schema
    from drip.store.backup import copy_database

    config = settings()
    source = db.engine_for(config, create=False)
    target_settings = config.model_copy(update={"database_url": to})
    target = db.engine_for(target_settings, migrate=False, create=True)
    schema.upgrade(target)
    copied = copy_database(source, target)
    say("copied " + ", ".join(f"{n} {table} rows" for table, n in copied.items()))
    key_file = config.generated_key_file()
    if key_file is not None:
        say(f"wherever drip uses the copy, set DRIP_SECRET_KEY to the key in {key_file}")
    else:
        say("wherever drip uses the copy, set the same DRIP_SECRET_KEY")
    say(f"(the copy refuses any other key: {KEY_NEEDED})")
