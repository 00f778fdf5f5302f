"""``drip api-keys``: who may use the API at /api/v1."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from drip.cli._common import DripGroup, cell, console, engine, say

app = typer.Typer(cls=DripGroup, no_args_is_help=True, help="Keys for the API at /api/v1.")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Who it is for, e.g. crm.")],
    read_only: Annotated[
        bool, typer.Option("--read-only", help="It may read, and change nothing.")
    ] = False,
) -> None:
    """Create a key and print it alone on the last line, once (only its hash is kept).
    Send it as `Authorization: Bearer KEY`.

    Example: drip api-keys create crm --read-only
    """
    from drip.store import apikeys

    with engine().begin() as connection:
        key = apikeys.create(connection, name=name, read_only=read_only, now=datetime.now(UTC))
    say(f"key {name!r} created{' (read-only)' if read_only else ''}; it is shown this once:")
    typer.echo(key)


@app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """The keys: name, read-only or not, created, last used (never the keys themselves).

    Example: drip api-keys list
    """
    from drip.store import apikeys

    with engine().connect() as connection:
        keys = apikeys.listed(connection)
    rows: list[dict[str, str | bool | None]] = [
        {
            "name": k.name,
            "read_only": k.read_only,
            "created_at": k.created_at.isoformat(),
            "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
        }
        for k in keys
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table("name", "access", "created (UTC)", "last used (UTC)")
    for row in rows:
        table.add_row(
            cell(row["name"]),
            "read-only" if row["read_only"] else "read and write",
            str(row["created_at"])[:16],
            str(row["last_used_at"] or "never")[:16],
        )
    console().print(table)
    if not rows:
        say("no keys: create one with `drip api-keys create NAME`")


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: requests with it are refused from now on.

    Example: drip api-keys revoke crm
    """
    from drip.store import apikeys

    with engine().begin() as connection:
        apikeys.revoke(connection, name=name)
    say(f"key {name!r} revoked")
