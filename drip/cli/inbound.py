"""``drip inbound``: handle one email that came back (a bounce, a complaint, a mailto
unsubscribe), piped in by an MTA or read from a file."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drip.cli._common import catalog, engine, say, settings

if TYPE_CHECKING:
    from drip.feedback.inbound import Handled

#: the exit code that makes an MTA keep the email and try again later (sysexits EX_TEMPFAIL)
TEMPFAIL = 75


def inbound(
    source: Annotated[
        str, typer.Argument(metavar="[FILE|-]", help="A raw email (RFC 5322); - reads stdin.")
    ] = "-",
    to: Annotated[
        list[str] | None,
        typer.Option("--to", help="The envelope recipient, when the MTA passes it (repeatable)."),
    ] = None,
    imap: Annotated[
        str | None,
        typer.Option(
            "--imap",
            metavar="URL",
            help="Read every unread email of a mailbox instead: imaps://user:pass@host/FOLDER.",
        ),
    ] = None,
) -> None:
    """Handle one email that came back: a bounce suppresses per the bounce policy, a
    complaint unsubscribes and suppresses, a mail to List-Unsubscribe's address
    unsubscribes. Anything else is ignored. Exits 0 when handled or ignored, 75 when the
    database stays busy or out of reach for DRIP_DB_WAIT_SECONDS (the MTA keeps the email
    and retries later; with --imap the email stays unread for the next run).

    Example: drip inbound bounce.eml (from Postfix: a pipe transport running
    drip inbound - --to ${recipient}; from cron: drip inbound --imap "$BOUNCE_MAILBOX")
    """
    if imap is not None:
        _poll(imap)
        return
    from drip.feedback.inbound import MAX_BYTES

    try:
        with sys.stdin.buffer if source == "-" else Path(source).open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)  # one byte more tells it is too large
    except OSError as error:
        raise typer.BadParameter(f"cannot read {source}: {error.strerror}") from None
    with _database_busy_is_tempfail():
        handled = _handler(to or ())(raw)
    say(f"{handled.what}: {handled.detail}")


def _handler(recipients: Sequence[str]) -> Callable[[bytes], Handled]:
    """Handles one raw email in a transaction of its own."""
    from drip.core.tokens import Tokens
    from drip.feedback.inbound import handle_inbound
    from drip.store.engine import BUSY_MS

    config = settings()
    tokens = Tokens.from_settings(config)
    db = engine()
    courses = catalog(strict=False)

    def handle(raw: bytes) -> Handled:
        # the MTA (or the next poll) retries: wait as long as a web request would
        wait = {BUSY_MS: int(config.db_wait_seconds * 1000)}
        with db.connect() as connection, connection.execution_options(**wait).begin():
            return handle_inbound(
                connection,
                raw,
                settings=config,
                tokens=tokens,
                catalog=courses,
                now=datetime.now(UTC),
                recipients=recipients,
            )

    return handle


def _poll(url: str) -> None:
    import imaplib

    from imap_tools.errors import ImapToolsError

    from drip.feedback.imap import ImapConfig, poll

    config = ImapConfig.from_url(url)
    handle = _handler(())
    # the database first: a busy database is also a TimeoutError, hence an OSError
    with _database_busy_is_tempfail():
        try:
            results = poll(config, lambda raw: _said(handle(raw)))
        except (OSError, imaplib.IMAP4.error, ImapToolsError) as error:
            if _unavailable(error):
                raise
            typer.echo(f"error: cannot read the mailbox {config.host}: {error}", err=True)
            raise typer.Exit(1) from None
    handled = sum(result.what != "ignored" for result in results)
    say(f"{len(results)} read, {handled} handled and deleted, {len(results) - handled} left")


def _said(handled: Handled) -> Handled:
    say(f"{handled.what}: {handled.detail}")
    return handled


def _unavailable(error: BaseException) -> bool:
    from drip.store.engine import is_unavailable

    return is_unavailable(error)


@contextmanager
def _database_busy_is_tempfail() -> Iterator[None]:
    """Exit 75 (EX_TEMPFAIL) for a database busy or out of reach, whatever raised it."""
    try:
        yield
    except Exception as error:
        if not _unavailable(error):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        typer.echo(f"error: the database is busy or unreachable, try again: {first}", err=True)
        raise typer.Exit(TEMPFAIL) from None
