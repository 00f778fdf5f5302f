"""What every CLI command shares: settings, database, courses, ``--now`` parsing, output.

The CLI imports its heavy parts (SQLAlchemy, pydantic, Rich …) inside the commands that
use them, so ``drip --help`` and a cron ``send-due`` with nothing to do start quickly.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from drip.core.exceptions import DripError, InvalidCourse

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text
    from sqlalchemy import Engine

    from drip.core.config import Settings
    from drip.core.courses import Catalog


@cache
def console() -> Console:
    """Rich, for tables and progress bars (plain lines go through ``say``). Piped into
    another program, nothing is cut or wrapped to a terminal's width."""
    from rich.console import Console

    return Console() if is_tty() else Console(width=PIPED_WIDTH, soft_wrap=True)


#: the width tables are laid out for when not on a terminal: wide enough for any value
PIPED_WIDTH = 100_000


class DripGroup(TyperGroup):
    """Turns a ``DripError`` into one line on stderr and its exit code: no traceback."""

    def invoke(self, ctx: Any) -> Any:  # click's Context (typer may bundle its own click)
        try:
            return super().invoke(ctx)
        except InvalidCourse as error:
            for problem in error.problems:
                typer.echo(problem, err=True)
            raise typer.Exit(error.exit_code) from None
        except DripError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None


#: the exit status after Ctrl-C (128 + SIGINT), as a shell reports an interrupted command
INTERRUPTED = 130


def stop_on_signals(stop: Callable[[], object]) -> list[int]:
    """SIGINT and SIGTERM call ``stop`` once (claim nothing more, settle the messages in
    flight, write their receipts, give back the rest); a second signal exits at once
    (``INTERRUPTED``: what was sent and not yet recorded is sent again after its lease).
    Returns the list the signals received are added to."""
    import os
    import signal

    received: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        if received:
            os._exit(INTERRUPTED)
        received.append(signum)
        stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)
    return received


def settings() -> Settings:
    from drip.core.config import get_settings

    return get_settings()


def engine(*, migrate: bool = True, create: bool = False) -> Engine:
    """The configured database. Only ``db upgrade``, ``serve`` and ``run`` create one
    (``create``): any other command run from the wrong directory says where it looked."""
    from drip.store.engine import engine_for

    return engine_for(settings(), migrate=migrate, create=create)


NewKeyOption = Annotated[
    bool,
    typer.Option(
        "--new-key",
        help="Accept a signing key that cannot verify links already sent (they stop working).",
    ),
]


def signing_engine(*, new_key: bool, create: bool = False) -> Engine:
    """``engine()`` for a command that signs links: the key must still verify old ones."""
    from drip.store.keys import check_key

    db = engine(create=create)
    check_key(db, settings().secret_keys(), accept_new=new_key)
    return db


def catalog(*, strict: bool = True) -> Catalog:
    """The courses; ``strict``: any broken course file is an error (the commands that send
    pass False: the good courses carry on, the broken ones are reported)."""
    from drip.core.courses import Catalog

    return Catalog.from_dir(settings().courses_dir, strict=strict)


def parse_now(value: str | None) -> datetime:
    """``--now``: ISO 8601 with ``Z`` or an offset; a naive time means UTC; default: the clock."""
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not ISO 8601 (e.g. 2026-11-25T07:00:00Z or 2026-11-25T07:00+13:00)",
            param_hint="--now",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


NowOption = Annotated[
    str | None,
    typer.Option("--now", help="Pretend it is this time (ISO 8601; naive means UTC)."),
]


def is_tty() -> bool:
    return sys.stdout.isatty()


def plain(value: object) -> str:
    """``value`` safe for a terminal: control characters (ESC, NUL, CR …) shown escaped,
    so a stored name or server reply can neither move the cursor nor fake output."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else repr(ch)[1:-1] for ch in str(value))


def cell(value: object) -> Text:
    """A table cell that shows ``value`` as typed: never read as Rich markup or links."""
    from rich.text import Text

    return Text(plain("" if value is None else value))


def say(line: object) -> None:
    """One line of output, unwrapped and free of control characters."""
    typer.echo(plain(line))


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> timedelta:
    """``30m``, ``12h``, ``1d``, ``2w`` (a bare number means seconds)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", value.strip().lower())
    if match is None:
        raise typer.BadParameter(f"{value!r} is not a duration (e.g. 30m, 12h, 1d, 2w)")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (nothing otherwise); yields ``advance(n)``."""
    if not is_tty():
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress(console=console(), transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)
