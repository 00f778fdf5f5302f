"""``drip stats``: a course's funnel, day by day."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer

from drip.cli._common import catalog, cell, console, engine


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value.strip()), datetime.min.time(), UTC)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (e.g. 2026-11-01)") from None


def stats(
    course_slug: Annotated[
        str | None,
        typer.Argument(metavar="[COURSE]", help="Course slug (default: every course)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only people who signed up on or after this date (UTC)."),
    ] = None,
) -> None:
    """The funnel of the course named, or of every course: signups, confirmed, completed,
    then per day sent, class clicks, who left after it, bounced, reported as spam and
    failed. --json prints one object for the course named, a list without one.

    Example: drip stats yin-immersion --since 2026-11-01 --json
    """
    start = _since(since)
    courses = catalog()
    chosen = [courses.get(course_slug)] if course_slug else list(courses)
    from drip.reporting.stats import funnels
    from drip.store.engine import READ_ONLY

    with engine().connect() as connection:
        reading = connection.execution_options(**{READ_ONLY: True})
        results = funnels(reading, chosen, since=start)
    if as_json:
        typer.echo(json.dumps(results[0] if course_slug else results, indent=2))
        return
    for index, result in enumerate(results):
        if index:
            typer.echo("")
        _print(result)


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:.0%}"


def _print(result: dict[str, Any]) -> None:
    from rich.table import Table

    from drip.reporting.stats import controls_line

    out = console()
    since = f" (signed up since {result['since'][:10]})" if result["since"] else ""
    out.print(cell(f"{result['course']}{since}"))
    out.print(
        cell(
            f"signups {result['signups']} · confirmed {result['confirmed']} · completed "
            f"{result['completed']} ({_percent(result['completion_rate'])} of confirmed)"
        )
    )
    out.print(cell(controls_line(result)))
    table = Table("day", "sent", "clicked", "left", "bounced", "spam", "failed", "skipped", "id")
    for day in result["days"]:
        table.add_row(
            str(day["day"]),
            str(day["sent"]),
            f"{day['clicked']} ({_percent(day['click_rate'])})",
            str(day["unsubscribed"]),
            str(day["bounced"]),
            str(day["complained"]),
            str(day["failed"]),
            str(day["skipped"]),
            cell(day["id"]),
        )
    out.print(table)
