"""``drip db``: the database schema."""

from __future__ import annotations

import typer

from drip.cli._common import DripGroup, console, settings

app = typer.Typer(cls=DripGroup, no_args_is_help=True, help="Database schema commands.")


@app.command()
def upgrade() -> None:
    """Create or migrate the schema to the newest version.

    Example: drip db upgrade
    """
    from drip import db

    engine = db.engine_for(settings(), migrate=False, create=True)
    before, after = db.upgrade(engine)
    if before == after:
        console().print(f"database is up to date (revision {after})")
    else:
        console().print(f"database upgraded from {before or 'empty'} to {after}")
