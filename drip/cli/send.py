"""``drip send-due`` and ``drip run``: the send engine from cron or as a service."""

from __future__ import annotations

import json
import signal
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import typer

from drip.cli._common import (
    INTERRUPTED,
    NewKeyOption,
    NowOption,
    catalog,
    console,
    engine,
    is_tty,
    parse_now,
    plain,
    settings,
    signing_engine,
    stop_on_signals,
)
from drip.core.exceptions import ConfigError

if TYPE_CHECKING:
    from drip.sending.engine import RunReport, Sender


def send_due(
    now: NowOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Send at most this many emails.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what is due; claim and send nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    new_key: NewKeyOption = False,
) -> None:
    """Send every email due now (lessons, confirmations …), then exit: 0 all sent,
    1 something failed (retried later), 2 bad usage or configuration.

    Safe to run from cron every minute, even overlapping: no email is sent twice. Ctrl-C or
    SIGTERM stops it cleanly: nothing more is claimed, the messages in flight are settled
    and recorded, the rest given back, the summary printed, exit 130; a second Ctrl-C
    exits at once.

    Example: drip send-due --now 2026-11-25T07:00:00Z --limit 500
    """
    from drip.core.logs import configure as configure_logging
    from drip.reporting.outbox import due
    from drip.runner import make_sender
    from drip.store.engine import READ_ONLY

    when = parse_now(now)
    configure_logging("WARNING")  # cron: failures are logged, the summary is the one line
    if dry_run:
        with engine().connect() as connection:
            rows = due(connection.execution_options(**{READ_ONLY: True}), now=when, limit=limit)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        from rich.table import Table  # only here: cron's run never pays for it

        table = Table("email", "course", "email kind or day", "due (UTC)", "attempts")
        for row in rows:
            table.add_row(
                *(str(row[key]) for key in ("email", "course", "day", "due_at", "attempts"))
            )
        console().print(table)
        typer.echo(f"{len(rows)} email(s) due at {when.isoformat()}")
        return
    from drip.sending.webhooks import Dispatcher, run_beside

    database = signing_engine(new_key=new_key)
    sender = make_sender(engine=database, settings=settings(), catalog=catalog(strict=False))
    interrupted = stop_on_signals(sender.stopping.set)
    dispatcher = Dispatcher(database)
    try:
        if is_tty() and not as_json:
            job = partial(_with_progress, sender, when, limit)
        else:
            job = partial(sender.send_due, now=when, limit=limit)
        report, posted = run_beside(dispatcher, job, now=when, stop=sender.stopping)
    finally:
        dispatcher.close()
    for problem in report.course_problems:
        typer.echo(plain(problem), err=True)
    if as_json:
        typer.echo(json.dumps({**report.as_dict(), "ok": report.ok, "webhooks": dict(posted)}))
    else:
        posts = ", ".join(
            f"{n} {what.replace('_', ' ')}" for what, n in sorted(posted.items()) if n
        )
        typer.echo(summary(report) + (f"; webhooks: {posts}" if posts else ""))
    if report.config_error:
        raise ConfigError(report.config_error)
    if interrupted:
        raise typer.Exit(INTERRUPTED)
    if not report.ok:
        raise typer.Exit(1)


def summary(report: RunReport) -> str:

    line = ", ".join(
        f"{value} {key}" for key, value in report.as_dict().items() if key != "stopped"
    )
    return line + (f"; stopped early: {report.stopped}" if report.stopped else "")


def _with_progress(sender: Sender, when: Any, limit: int | None) -> RunReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
    )
    with Progress(*columns, console=console(), transient=True) as progress:
        task = progress.add_task("send", total=limit, last="")
        return sender.send_due(
            now=when,
            limit=limit,
            progress=lambda outcome: progress.update(task, advance=1, last=outcome),
        )


def run(
    interval: Annotated[
        int | None,
        typer.Option(
            "--interval", min=1, help="Seconds between runs (default DRIP_SEND_INTERVAL_SECONDS)."
        ),
    ] = None,
    new_key: NewKeyOption = False,
) -> None:
    """Run the send loop until SIGTERM or Ctrl-C: send-due every minute, never overlapping.
    A stop finishes the message in flight, records it, gives back the rest and exits 0; a
    second Ctrl-C exits at once.

    Example: drip run --interval 60
    """
    from drip.core.logs import configure as configure_logging
    from drip.runner import make_sender
    from drip.sending.loop import WebhookLoop, make_scheduler, run_now, stop
    from drip.sending.webhooks import Dispatcher

    configure_logging("INFO")
    config = settings()
    database = signing_engine(new_key=new_key, create=True)
    sender = make_sender(engine=database, settings=config, catalog=catalog(strict=False))
    scheduler = make_scheduler(
        sender, interval_seconds=interval or config.send_interval_seconds, background=False
    )
    posting = WebhookLoop(Dispatcher(database))

    def stop_all() -> None:
        stop(scheduler, sender)
        posting.stop()

    stop_on_signals(stop_all)
    posting.start()
    # SIGHUP: run now (course files changed are read again at the start of every run)
    signal.signal(signal.SIGHUP, lambda *_: run_now(scheduler))
    typer.echo(
        f"drip: sending every {interval or config.send_interval_seconds}s; "
        "stop with Ctrl-C or SIGTERM",
        err=True,
    )
    scheduler.start()
