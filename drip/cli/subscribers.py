"""``drip subscribers``: add, list, show, export, import, delete, unsubscribe."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from drip import enrollment
from drip.cli._common import DripGroup, NowOption, catalog, console, engine, parse_now, settings
from drip.db import session_scope
from drip.exceptions import DripError, InvalidSubscriber
from drip.models import SubscriberStatus
from drip.subscribers import (
    clean_timezone,
    delete_subscriber,
    enrollments_of,
    get_by_email,
    history,
    iter_subscribers,
    normalize_email,
    public_dict,
)

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
    """Add a subscriber to a course; pending with a confirmation email unless --confirmed.

    Example: drip subscribers add ana@example.org --name Ana --timezone Europe/Lisbon --confirmed
    """
    when = parse_now(now)
    if timezone and clean_timezone(timezone) is None:
        raise InvalidSubscriber(
            f"--timezone: unknown IANA time zone {timezone!r}", field="timezone"
        )
    chosen = catalog().default(course or settings().default_course)
    with session_scope(engine()) as session:
        result = enrollment.sign_up(
            session=session,
            course=chosen,
            email=email,
            name=name,
            timezone=timezone,
            consent=enrollment.Consent(source="cli"),
            confirmed=confirmed,
            now=when,
            confirm_resend_seconds=0,
        )
        status = result.subscriber.status
    console.print(f"{result.subscriber.email}: {status} on {chosen.slug}")


@app.command("list")
def list_subscribers(
    status: StatusOption = None,
    course: CourseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List subscribers as a table, or a JSON array with --json.

    Example: drip subscribers list --status active --json
    """
    with session_scope(engine()) as session:
        rows = iter_subscribers(session=session, status=status, course=course)
        if as_json:
            _write_json_array(public_dict(row) for row in rows)
            return
        table = Table("email", "name", "timezone", "status", "since")
        for row in rows:
            table.add_row(
                row.email,
                row.name,
                row.timezone or "(course default)",
                row.status,
                row.created_at.strftime("%Y-%m-%d %H:%M"),
            )
        console.print(table)


@app.command()
def show(email: Annotated[str, typer.Argument()]) -> None:
    """Show one subscriber with consent details and every lesson's delivery receipt.

    Example: drip subscribers show ana@example.org
    """
    with session_scope(engine()) as session:
        subscriber = get_by_email(session=session, email=email)
        for key, value in public_dict(subscriber).items():
            console.print(f"{key:>18}: {value if value is not None else '-'}", markup=False)
        for item in enrollments_of(session=session, subscriber=subscriber):
            console.print(f"{'course':>18}: {item.course_slug} ({item.status})", markup=False)
        table = Table("course", "day", "status", "due (UTC)", "attempts", "sent (UTC)", "error")
        for view in history(session=session, subscriber=subscriber):
            table.add_row(
                view.course,
                view.day_id,
                view.status,
                view.due_at.strftime("%Y-%m-%d %H:%M"),
                str(view.attempts),
                view.sent_at.strftime("%Y-%m-%d %H:%M") if view.sent_at else "",
                view.last_error or "",
            )
        console.print(table)


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
                writer.writerows(rows)
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
    now: NowOption = None,
) -> None:
    """Import subscribers from CSV; all rows are checked before any is stored.

    Example: drip subscribers import people.csv --confirmed
    """
    when = parse_now(now)
    chosen = catalog().default(course or settings().default_course)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise InvalidSubscriber(f"{path}: {error.strerror}", field="path") from None
    if not rows or "email" not in rows[0]:
        raise InvalidSubscriber(f"{path}: needs a header row with an 'email' column", field="email")
    problems = []
    for line, row in enumerate(rows, start=2):
        try:
            normalize_email(row.get("email") or "")
        except DripError as error:
            problems.append(f"{path}:{line}: {error}")
    if problems:
        for problem in problems:
            console.print(problem, markup=False)
        raise typer.Exit(1)
    with session_scope(engine()) as session:
        for row in rows:
            enrollment.sign_up(
                session=session,
                course=chosen,
                email=row["email"],
                name=row.get("name"),
                timezone=row.get("timezone"),
                consent=enrollment.Consent(source=f"import:{path}"),
                confirmed=confirmed,
                now=when,
                confirm_resend_seconds=0,
            )
    console.print(f"imported {len(rows)} subscribers into {chosen.slug}")


@app.command()
def unsubscribe(email: Annotated[str, typer.Argument()], now: NowOption = None) -> None:
    """Unsubscribe an address now and cancel every lesson not yet sent.

    Example: drip subscribers unsubscribe ana@example.org
    """
    with session_scope(engine()) as session:
        subscriber = get_by_email(session=session, email=email)
        changed = enrollment.stop_subscriber(
            session=session,
            subscriber=subscriber,
            status=SubscriberStatus.UNSUBSCRIBED,
            now=parse_now(now),
        )
    console.print(
        f"{subscriber.email}: {'unsubscribed' if changed else 'already ' + subscriber.status}"
    )


@app.command()
def delete(
    email: Annotated[str, typer.Argument()],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a subscriber, their enrollments and delivery receipts (right to erasure).

    Example: drip subscribers delete ana@example.org --yes
    """
    if not yes and not typer.confirm(f"Erase {email} and all their history?"):
        raise typer.Exit(1)
    with session_scope(engine()) as session:
        delete_subscriber(session=session, subscriber=get_by_email(session=session, email=email))
    console.print(f"{email}: deleted")


def _write_json_array(rows, handle=None) -> None:  # type: ignore[no-untyped-def]
    """Stream a JSON array one object at a time (bounded memory for big lists)."""
    out = handle or sys.stdout
    out.write("[")
    for index, row in enumerate(rows):
        out.write(("," if index else "") + "\n  " + json.dumps(row, ensure_ascii=False))
    out.write("\n]\n")
