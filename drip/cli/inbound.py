"""``drip inbound``: handle one email that came back (a bounce, a complaint, a mailto
unsubscribe), piped in by an MTA or read from a file."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from drip.cli._common import catalog, engine, say, settings

#: the exit code that makes an MTA keep the email and try again later (sysexits EX_TEMPFAIL)
TEMPFAIL = 75
#: a raw email larger than this is not a bounce drip needs to read
MAX_BYTES = 10 * 1024 * 1024


def inbound(
    source: Annotated[
        str, typer.Argument(metavar="[FILE|-]", help="A raw email (RFC 5322); - reads stdin.")
    ] = "-",
    to: Annotated[
        list[str] | None,
        typer.Option("--to", help="The envelope recipient, when the MTA passes it (repeatable)."),
    ] = None,
) -> None:
    """Handle one email that came back: a bounce suppresses per the bounce policy, a
    complaint unsubscribes and suppresses, a mail to List-Unsubscribe's address
    unsubscribes. Anything else is ignored. Exits 0 when handled or ignored, 75 when the
    database is busy (the MTA retries later).

    Example: drip inbound bounce.eml (from Postfix: a pipe transport running
    drip inbound - --to ${recipient})
    """
    if source == "-":
        raw = sys.stdin.buffer.read(MAX_BYTES + 1)
    else:
        try:
            raw = Path(source).read_bytes()[: MAX_BYTES + 1]
        except OSError as error:
            raise typer.BadParameter(f"cannot read {source}: {error.strerror}") from None
    if len(raw) > MAX_BYTES:
        say("ignored: larger than 10 MiB")
        return
    from sqlalchemy.exc import OperationalError

    from drip.inbound import handle_inbound
    from drip.tokens import Tokens

    config = settings()
    tokens = Tokens.from_settings(config)
    try:
        with engine().begin() as connection:
            handled = handle_inbound(
                connection,
                raw,
                settings=config,
                tokens=tokens,
                catalog=catalog(strict=False),
                now=datetime.now(UTC),
                recipients=to or (),
            )
    except OperationalError as error:
        typer.echo(f"error: the database is busy or unreachable, try again: {error}", err=True)
        raise typer.Exit(TEMPFAIL) from None
    say(f"{handled.what}: {handled.detail}")
