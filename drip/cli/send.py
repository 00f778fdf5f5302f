"""``drip send-due`` and ``drip run``: the send engine from cron or as a service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
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
    from sqlalchemy import Engine

    from drip.core.config import Settings
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
    config = settings()
    shares = _processes(database, config, when=when, limit=limit)
    config = _per_process(config, shares)
    helper_limit, limit = _share(limit, shares), _share(limit, shares, first=True)
    sender = make_sender(engine=database, settings=config, catalog=catalog(strict=False))
    helpers: list[subprocess.Popen[str]] = []

    def stop() -> None:
        sender.stopping.set()
        _stop_helpers(helpers)

    interrupted = stop_on_signals(stop)
    # how a parent stops its helpers: settle and record, as for SIGTERM, but never the
    # "exit at once" of a second signal (a helper may also get the SIGTERM sent to all)
    signal.signal(signal.SIGUSR1, lambda *_: sender.stopping.set())
    dispatcher = Dispatcher(database)
    try:
        for _ in range(shares - 1):
            if sender.stopping.is_set():  # asked to stop already: no helper to start
                break
            helpers.append(_start_helper(config, when=when, limit=helper_limit))
        if is_tty() and not as_json:
            job = partial(_with_progress, sender, when, limit)
        else:
            job = partial(sender.send_due, now=when, limit=limit)
        report, posted = run_beside(dispatcher, job, now=when, stop=sender.stopping)
    except BaseException:
        _stop_helpers(helpers)  # none goes on alone after this process failed
        for helper in helpers:
            helper.communicate()
        raise
    finally:
        dispatcher.close()
    shares_sent: list[int | None] = [report.sent]
    failed = _join_helpers(helpers, report, posted, shares_sent)
    for problem in report.course_problems:
        typer.echo(plain(problem), err=True)
    if as_json:
        summary_json = {
            **report.as_dict(),
            "ok": report.ok and not failed,
            "webhooks": dict(posted),
        }
        if helpers:  # what each process sent (null: it did not report)
            summary_json["processes"] = shares_sent
        typer.echo(json.dumps(summary_json))
    else:
        posts = ", ".join(
            f"{n} {what.replace('_', ' ')}" for what, n in sorted(posted.items()) if n
        )
        typer.echo(summary(report) + (f"; webhooks: {posts}" if posts else ""))
    if report.config_error:
        raise ConfigError(report.config_error)
    if interrupted:
        raise typer.Exit(INTERRUPTED)
    if not report.ok or failed:
        raise typer.Exit(max([1, *failed]))


def _processes(database: Engine, config: Settings, *, when: datetime, limit: int | None) -> int:
    """How many ``send-due`` processes share this run: ``DRIP_SEND_PROCESSES`` when enough
    is due for each to claim a few batches, else one (a helper's start-up would cost more
    than it saves). The claim keeps any two from taking the same email, as for
    overlapping cron runs."""
    from drip.reporting.outbox import due
    from drip.store.engine import READ_ONLY

    wanted = 2 * config.batch_size * config.smtp_connections * config.send_processes
    if config.send_processes == 1 or (limit is not None and limit < wanted):
        return 1
    with database.connect() as connection:
        reading = connection.execution_options(**{READ_ONLY: True})
        enough = len(due(reading, now=when, limit=wanted)) == wanted
    return config.send_processes if enough else 1


def _per_process(config: Settings, shares: int) -> Settings:
    """The settings of each of ``shares`` processes: ``DRIP_SEND_RATE`` is the whole
    run's, shared out."""
    return config.model_copy(update={"send_rate": config.send_rate / shares})


def _start_helper(config: Settings, *, when: datetime, limit: int | None) -> subprocess.Popen[str]:
    """One more ``send-due`` on this run, with ``config``'s rate (its share), reporting
    in JSON."""
    from drip.core.config import env_file

    env = {**os.environ, "DRIP_SEND_PROCESSES": "1", "DRIP_SEND_RATE": repr(config.send_rate)}
    command = [sys.executable, "-m", "drip"]
    if env_file().is_file():  # the settings this process read, wherever they came from
        command += ["--env-file", str(env_file().resolve())]
    command += ["send-due", "--now", when.isoformat(), "--json"]
    return subprocess.Popen(
        command + ([] if limit is None else ["--limit", str(limit)]),
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        # a Ctrl-C reaches this process only, which passes the stop on (SIGUSR1)
        start_new_session=True,
    )


def _share(limit: int | None, shares: int, *, first: bool = False) -> int | None:
    """One process's share of ``--limit`` (the first takes what does not divide)."""
    if limit is None:
        return None
    return limit // shares + (limit % shares if first else 0)


def _stop_helpers(helpers: list[subprocess.Popen[str]]) -> None:
    for helper in helpers:
        if helper.poll() is None:
            helper.send_signal(signal.SIGUSR1)


def _join_helpers(
    helpers: list[subprocess.Popen[str]],
    report: RunReport,
    posted: Counter[str],
    sent: list[int | None],
) -> list[int]:
    """Wait for the helper processes and add what they did to ``report`` and ``posted``,
    and what each sent to ``sent`` (None: it did not report); the exit codes of those
    that did not finish their share (their own log lines say why)."""
    from drip.sending.engine import SendOutcome

    failed = []
    for helper in helpers:
        out, _ = helper.communicate()
        try:
            theirs = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            sent.append(None)
            failed.append(helper.returncode or 1)
            continue
        for outcome in SendOutcome:
            report.counts[outcome] += int(theirs.get(str(outcome), 0))
        sent.append(int(theirs.get(str(SendOutcome.SENT), 0)))
        posted.update({what: int(n) for what, n in theirs.get("webhooks", {}).items()})
        if helper.returncode != 0 or theirs.get("stopped"):
            failed.append(helper.returncode or 1)
            report.stopped = report.stopped or theirs.get("stopped")
    return failed


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
