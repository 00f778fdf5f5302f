"""``drip subscribers``: add, list, show, export, import, delete, unsubscribe."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drip.cli._common import (
    DripGroup,
    NowOption,
    catalog,
    cell,
    console,
    engine,
    parse_duration,
    parse_now,
    progress_bar,
    say,
    settings,
)
from drip.core import memory
from drip.core.exceptions import InvalidSubscriber, SubscriberNotFound
from drip.core.states import SubscriberStatus

if TYPE_CHECKING:
    from drip.lifecycle.signup import SignupResult

#: when a queued email goes out
QUEUED = "sent at once by `drip serve`, else by the next `drip send-due` / `drip run`"

app = typer.Typer(cls=DripGroup, no_args_is_help=True, help="Manage subscribers.")

CourseOption = Annotated[
    str | None, typer.Option("--course", "-c", help="Course slug; default: the only course.")
]
StatusOption = Annotated[
    SubscriberStatus | None, typer.Option("--status", help="Only subscribers with this status.")
]
EXPORT_FIELDS = (
    "email",
    "name",
    "timezone",
    "status",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "consent_at",
    "consent_ip",
    "consent_user_agent",
    "consent_source",
)


@app.command()
def add(
    email: Annotated[str, typer.Argument(help="The subscriber's email address.")],
    name: Annotated[str, typer.Option(help="Display name used in greetings.")] = "",
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone, e.g. Europe/London.")
    ] = None,
    course: CourseOption = None,
    confirmed: Annotated[
        bool,
        typer.Option(help="Enrol now without a confirmation email (you hold their consent)."),
    ] = False,
    now: NowOption = None,
) -> None:
    """Add a subscriber to a course: pending, with a confirmation email queued, unless
    --confirmed. Someone who unsubscribed is never re-added (they can sign up again).

    Example: drip subscribers add ana@example.org --name Ana --timezone Europe/Lisbon --confirmed
    """
    from drip.core.entries import Entry
    from drip.lifecycle.signup import Consent, sign_up

    when = parse_now(now)
    entry = Entry.clean(email=email, name=name, timezone=_zone_or_error(timezone, "--timezone"))
    chosen = catalog().default(course or settings().default_course)
    with engine().begin() as connection:
        [outcome] = sign_up(
            connection,
            course=chosen,
            entries=[entry],
            consent=Consent(source="cli"),
            by_operator=True,
            confirmed=confirmed,
            resend_gap_seconds=0,
            now=when,
        )
    say(f"{entry.email}: {_describe(outcome, chosen.slug)}")


def _describe(outcome: SignupResult, slug: str) -> str:
    from drip.lifecycle.signup import Action

    if outcome.action == Action.CONFIRM:
        return f"pending on {slug}; a confirmation email is queued ({QUEUED})"
    if outcome.action == Action.ACTIVATE:
        return f"active on {slug}; their next lesson is queued"
    if outcome.was == SubscriberStatus.UNSUBSCRIBED:
        return "unsubscribed earlier: not re-added (they can sign up again themselves)"
    if outcome.was == SubscriberStatus.SUPPRESSED:
        return "suppressed (the mail server refused the address): not added"
    return f"already on {slug}: nothing changed"


def _zone_or_error(timezone: str | None, where: str) -> str | None:
    from drip.core.entries import clean_timezone

    if timezone and clean_timezone(timezone) is None:
        raise InvalidSubscriber(f"{where}: unknown IANA time zone {timezone!r}", field="timezone")
    return timezone


@app.command("list")
def list_subscribers(
    status: StatusOption = None,
    course: CourseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List subscribers as a table, or a JSON array with --json.

    Example: drip subscribers list --status active --json
    """
    from rich.table import Table

    from drip.reporting.subscribers import iter_subscribers, public_dict
    from drip.store.engine import session_scope

    if course:
        catalog(strict=False).get(course)  # an unknown course is an error, not an empty list
    with session_scope(engine()) as session:
        rows = iter_subscribers(session=session, status=status, course=course)
        if as_json:
            _write_json_array(public_dict(row) for row in rows)
            return
        table = Table("email", "name", "timezone", "status", "since")
        for row in rows:
            table.add_row(
                cell(row.email),
                cell(row.name),
                cell(row.timezone or "(course default)"),
                cell(row.status),
                cell(row.created_at.strftime("%Y-%m-%d %H:%M")),
            )
        console().print(table)


@app.command()
def show(
    email: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show one subscriber with consent details, every email's delivery receipt, and the
    bounces and complaints received.

    Example: drip subscribers show ana@example.org --json
    """
    from rich.table import Table

    from drip.reporting.subscribers import describe
    from drip.store.engine import session_scope

    with session_scope(engine()) as session:
        found = describe(session=session, email=email)
    if as_json:
        typer.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    for key, value in found["subscriber"].items():
        say(f"{key:>18}: {value if value is not None else '-'}")
    for item in found["enrollments"]:
        say(f"{'course':>18}: {item['course']} ({item['status']})")
    table = Table("course", "email", "status", "due (UTC)", "attempts", "sent (UTC)", "error")
    for view in found["emails"]:
        table.add_row(
            cell(view["course"]),
            cell(view["key"]),
            cell(view["status"]),
            cell(_minute(view["due_at"])),
            cell(view["attempts"]),
            cell(_minute(view["sent_at"])),
            cell(view["last_error"]),
        )
    console().print(table)
    if found["events"]:
        table = Table("bounce or complaint", "from", "when (UTC)", "diagnostic")
        for event in found["events"]:
            table.add_row(
                cell(event["kind"]),
                cell(event["source"]),
                cell(_minute(event["created_at"])),
                cell(event["diagnostic"]),
            )
        console().print(table)


def _minute(iso: str | None) -> str:
    """An ISO time from ``describe`` as the table shows it: to the minute."""
    return iso.replace("T", " ")[:16] if iso else ""


@app.command()
def export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    status: StatusOption = None,
) -> None:
    """Export subscribers with their proof of consent, as CSV or JSON.

    Example: drip subscribers export -o subscribers.csv
    """
    from drip.lifecycle.imports import spreadsheet_safe
    from drip.reporting.subscribers import iter_subscribers, public_dict
    from drip.store.engine import session_scope

    if fmt not in ("csv", "json"):
        raise typer.BadParameter("must be csv or json", param_hint="--format")
    handle = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        with session_scope(engine()) as session:
            rows = (public_dict(s) for s in iter_subscribers(session=session, status=status))
            if fmt == "json":
                _write_json_array(rows, handle)
            else:
                writer = csv.DictWriter(handle, EXPORT_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    finally:
        if output:
            handle.close()


@app.command("import")
def import_(
    path: Annotated[
        Path, typer.Argument(help="CSV with an email column; name, timezone optional.")
    ],
    course: CourseOption = None,
    confirmed: Annotated[
        bool, typer.Option(help="Enrol at once: you already hold these people's consent.")
    ] = False,
    encoding: Annotated[
        str | None,
        typer.Option(help="The file's text encoding (default: UTF-8, or as its BOM says)."),
    ] = None,
    now: NowOption = None,
) -> None:
    """Import subscribers from CSV. Every row is checked first (problems are listed with
    file:line and nothing is stored); then rows are stored in chunks, each its own short
    transaction, so a running `drip serve` is never held up for long. Without
    --confirmed each new subscriber gets a confirmation email; people who unsubscribed
    or were suppressed are never re-added.

    Example: drip subscribers import people.csv --confirmed
    """
    from drip.lifecycle.imports import chunks, read_import
    from drip.lifecycle.signup import Consent, sign_up

    when = parse_now(now)
    chosen = catalog().default(course or settings().default_course)
    checked = read_import(path, encoding=encoding)
    for problem in checked.problems:
        say(problem)
    if checked.problems:
        raise typer.Exit(1)
    # the rows are kept to the end: the batches' full collections need not walk them
    # (100,000 rows: 7 % of the import's time)
    memory.set_aside()
    tally: Counter[tuple[str, str | None]] = Counter()  # (action, status before)
    with progress_bar(len(checked.entries), "importing") as advance, engine().connect() as db:
        for chunk in chunks(checked.entries, IMPORT_CHUNK):
            with db.begin():
                outcomes = sign_up(
                    db,
                    course=chosen,
                    entries=chunk,
                    consent=Consent(source=f"import:{path.name}"),
                    by_operator=True,
                    confirmed=confirmed,
                    resend_gap_seconds=0,
                    now=when,
                )
            tally.update((outcome.action, outcome.was) for outcome in outcomes)
            advance(len(chunk))
    say(
        f"{path}: {len(checked.entries)} subscribers for {chosen.slug}: "
        + ", ".join(f"{n} {what}" for what, n in sorted(_tallied(tally).items()))
        + (f"; {checked.duplicates} duplicate rows skipped" if checked.duplicates else ""),
    )


IMPORT_CHUNK = 1000


def _tallied(tally: Counter[tuple[str, str | None]]) -> Counter[str]:
    """The outcomes of an import, said the way the summary line says them."""
    from drip.lifecycle.signup import Action

    said: Counter[str] = Counter()
    for (action, was), n in tally.items():
        if action == Action.CONFIRM:
            said["queued a confirmation"] += n
        elif action == Action.ACTIVATE:
            said["enrolled"] += n
        elif was in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED):
            said[f"{was} earlier (not re-added)"] += n
        else:
            said["already subscribed"] += n
    return said


@app.command("resend-confirmation")
def resend_confirmation(
    email: Annotated[str | None, typer.Argument(help="A pending subscriber's address.")] = None,
    all_pending: Annotated[
        bool, typer.Option("--all-pending", help="Every subscriber still pending.")
    ] = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help="With --all-pending: only if the last one is older (e.g. 1d, 12h)."
        ),
    ] = None,
    now: NowOption = None,
) -> None:
    """Queue a fresh confirmation email for a pending subscriber, or for all of them.

    Example: drip subscribers resend-confirmation --all-pending --older-than 1d
    """
    from drip.lifecycle import actions

    when = parse_now(now)
    if (email is None) == (not all_pending):
        raise typer.BadParameter("give an EMAIL or --all-pending (not both)")
    if older_than is not None and not all_pending:
        raise typer.BadParameter("goes with --all-pending", param_hint="--older-than")
    cutoff = when - parse_duration(older_than) if older_than else None
    with engine().begin() as connection:
        subscriber = actions.find(connection, email=email) if email else None
        queued = actions.resend_confirmation(
            connection, subscriber=subscriber, sent_before=cutoff, now=when
        )
    if subscriber is not None and not queued:
        raise SubscriberNotFound(
            f"{subscriber.email} is {subscriber.status}, not waiting for a confirmation"
        )
    say(f"queued {queued} confirmation email(s) ({QUEUED})")


@app.command()
def unsubscribe(email: Annotated[str, typer.Argument()], now: NowOption = None) -> None:
    """Unsubscribe an address now, as their own link would: every email not yet sent is
    cancelled, and the course's goodbye email, when it has one, queued.

    Example: drip subscribers unsubscribe ana@example.org
    """
    from drip.lifecycle import actions

    with engine().begin() as connection:
        subscriber = actions.find(connection, email=email)
        changed = actions.unsubscribe(
            connection, subscriber=subscriber, catalog=catalog(strict=False), now=parse_now(now)
        )
    say(f"{subscriber.email}: {'unsubscribed' if changed else 'already ' + subscriber.status}")


@app.command()
def suppress(
    email: Annotated[str, typer.Argument()],
    reason: Annotated[
        str, typer.Option(help="Why, kept with the subscriber (e.g. 'asked by phone').")
    ] = "suppressed by the operator",
    now: NowOption = None,
) -> None:
    """Never mail an address again (a dead address, or someone who asked by other means):
    every email not yet sent is cancelled, without a goodbye.

    Example: drip subscribers suppress ana@example.org --reason "asked by phone"
    """
    from drip.lifecycle import actions

    with engine().begin() as connection:
        subscriber = actions.find(connection, email=email)
        changed = actions.suppress(
            connection, subscriber=subscriber, reason=reason, now=parse_now(now)
        )
    say(f"{subscriber.email}: {'suppressed' if changed else 'already suppressed'}")


def _control(
    email: str, control: str, now: str | None, days: str | None = None, send_at: str | None = None
) -> None:
    """Apply one of the subscriber's own controls for them, and say what happens next."""
    from drip.lifecycle import actions
    from drip.lifecycle.controls import Control, read_days, read_hour

    pause = read_days(days) if days is not None else None
    hour = read_hour(send_at) if send_at is not None else None
    when = parse_now(now)
    courses = catalog(strict=False)
    with engine().begin() as connection:
        subscriber = actions.find(connection, email=email)
        done = actions.control(
            connection,
            subscriber=subscriber,
            catalog=courses,
            control=Control(control),
            now=when,
            days=pause,
            send_at=hour,
        )
    if done.refused:
        say(f"{subscriber.email}: nothing changed: {done.refused}")
        raise typer.Exit(1)
    nxt = done.next_lesson
    after = f"; next lesson at {nxt.due_at:%Y-%m-%d %H:%M} UTC" if nxt and nxt.due_at else ""
    what = Control(control).done if done.changed else "nothing to change"
    say(f"{subscriber.email}: {what}{after}")


@app.command()
def pause(
    email: Annotated[str, typer.Argument()],
    days: Annotated[str, typer.Option("--days", metavar="1-30", help="Mornings without a lesson.")],
    now: NowOption = None,
) -> None:
    """Pause a subscriber's lessons for some mornings, as their own page would: the next
    lesson goes on the first allowed morning after them, the rest one a day after it.

    Example: drip subscribers pause ana@example.org --days 7
    """
    _control(email, "pause", now, days=days)


@app.command()
def resume(email: Annotated[str, typer.Argument()], now: NowOption = None) -> None:
    """End a subscriber's pause: the next lesson on the next allowed morning.

    Example: drip subscribers resume ana@example.org
    """
    _control(email, "resume", now)


@app.command()
def restart(email: Annotated[str, typer.Argument()], now: NowOption = None) -> None:
    """Start a subscriber's course again from day 1, on the next allowed morning, one a
    day (each day once per run; the after-course email still once).

    Example: drip subscribers restart ana@example.org
    """
    _control(email, "restart", now)


@app.command("set-time")
def set_time(
    email: Annotated[str, typer.Argument()],
    send_at: Annotated[str, typer.Argument(metavar="HH:MM", help="Local time, e.g. 18:30.")],
    now: NowOption = None,
) -> None:
    """Send a subscriber's lessons at another local hour from now on (in their zone).

    Example: drip subscribers set-time ana@example.org 18:30
    """
    _control(email, "time", now, send_at=send_at)


@app.command()
def delete(
    email: Annotated[str, typer.Argument()],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a subscriber, their enrollments and delivery receipts (right to erasure).

    Example: drip subscribers delete ana@example.org --yes
    """
    from drip.lifecycle import actions

    if not yes and not typer.confirm(f"Erase {email} and all their history?"):
        say(f"{email}: not deleted")
        raise typer.Exit(1)
    with engine().begin() as connection:
        actions.delete(connection, subscriber=actions.find(connection, email=email))
    say(f"{email}: deleted")


def _write_json_array(rows, handle=None) -> None:  # type: ignore[no-untyped-def]
    """Stream a JSON array one object at a time (bounded memory for big lists)."""
    out = handle or sys.stdout
    out.write("[")
    for index, row in enumerate(rows):
        out.write(("," if index else "") + "\n  " + json.dumps(row, ensure_ascii=False))
    out.write("\n]\n")
