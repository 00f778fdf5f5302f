"""``drip admin``: the dashboard's password (the dashboard at /admin is off without one)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from drip.cli._common import DripGroup, engine, say, settings

app = typer.Typer(cls=DripGroup, no_args_is_help=True, help="The teacher's dashboard at /admin.")


def _read_password() -> str:
    """Asked twice, hidden, on a terminal; otherwise one line of stdin."""
    if sys.stdin.isatty():
        password: str = typer.prompt(
            "Dashboard password", hide_input=True, confirmation_prompt=True
        )
        return password
    return sys.stdin.readline().rstrip("\r\n")


@app.command("set-password")
def set_password(
    print_only: Annotated[
        bool,
        typer.Option(
            "--print", help="Print the hash (for DRIP_ADMIN_PASSWORD_HASH) instead of storing it."
        ),
    ] = False,
) -> None:
    """Set the dashboard's password (at least 12 characters): the dashboard at /admin is
    on from then on, and every session signed in with an older password ends. On a
    terminal it asks twice; otherwise it reads one line from stdin.

    Example: drip admin set-password < password.txt
    """
    from drip.store import passwords

    password_hash = passwords.hash_password(_read_password())
    if print_only:
        typer.echo(password_hash)
        return
    with engine().begin() as connection:
        passwords.store(connection, password_hash)
    say("the dashboard's password is set: sign in at " + settings().base_url + "/admin")
    if settings().admin_password_hash is not None:
        say("note: DRIP_ADMIN_PASSWORD_HASH is set and takes precedence over this password")


@app.command("remove-password")
def remove_password() -> None:
    """Remove the stored password: /admin answers 404 again and every session ends
    (unless DRIP_ADMIN_PASSWORD_HASH is set).

    Example: drip admin remove-password
    """
    from drip.store import passwords

    with engine().begin() as connection:
        removed = passwords.forget(connection)
    say("the dashboard is off" if removed else "no password was stored: nothing changed")
    if settings().admin_password_hash is not None:
        say("note: DRIP_ADMIN_PASSWORD_HASH is set: the dashboard stays on with that password")
