"""The ``drip`` command line: a thin layer over the library, one sub-app per noun."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drip.cli import (
    admin,
    apikeys,
    course,
    db,
    doctor,
    inbound,
    send,
    serve,
    stats,
    subscribers,
    webhooks,
)
from drip.cli._common import DripGroup

app = typer.Typer(
    cls=DripGroup,
    name="drip",
    no_args_is_help=True,
    help="drip: self-hosted email drip courses. Configure with DRIP_* variables or a .env file.",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"drip {version('drip')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            help="Read DRIP_* settings from PATH instead of ./.env (an MTA's pipe, cron).",
        ),
    ] = None,
) -> None:
    """drip: self-hosted email drip courses. Configure with DRIP_* variables or a .env file."""
    if env_file is not None:
        from drip.core.config import use_env_file

        use_env_file(env_file)


app.add_typer(db.app, name="db")
app.add_typer(course.app, name="course")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(admin.app, name="admin")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(apikeys.app, name="api-keys")
app.command("serve")(serve.serve)
app.command("send-due")(send.send_due)
app.command("run")(send.run)
app.command("stats")(stats.stats)
app.command("inbound")(inbound.inbound)
app.command("form-snippet")(serve.form_snippet)
app.command("doctor")(doctor.doctor)


def main() -> None:
    app()
