"""``drip webhooks``: the endpoints drip posts events to (Standard Webhooks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from drip.cli._common import DripGroup, cell, console, engine, say

app = typer.Typer(
    cls=DripGroup, no_args_is_help=True, help="Signed webhooks: tell other tools what happens."
)
IdArgument = Annotated[int, typer.Argument(metavar="ID", help="The endpoint's id (see list).")]


@app.command()
def add(
    url: Annotated[str, typer.Argument(help="https:// (plain http:// only to this machine).")],
    events: Annotated[
        str | None,
        typer.Option(
            "--events", metavar="TYPE,…", help="Only these event types (default: every type)."
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="What it is, for you.")] = "",
) -> None:
    """Add an endpoint and print its signing secret, once: give it to the receiver (any
    Standard Webhooks library verifies drip's signatures with it).

    Example: drip webhooks add https://crm.example.com/hooks/drip --events course.completed
    """
    from drip.sending import endpoints

    with engine().begin() as connection:
        found = endpoints.add_endpoint(
            connection,
            url=url,
            events=events,
            description=description,
            now=datetime.now(UTC),
        )
    say(f"endpoint {found.id} added: {found.url} ({found.events or 'every event type'})")
    say("its signing secret, shown this once:")
    typer.echo(found.secret)


@app.command("list")
def list_endpoints(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """The endpoints, whether they are on, and how their messages stand.

    Example: drip webhooks list --json
    """
    from drip.reporting.webhooks import endpoint_views
    from drip.store.engine import READ_ONLY

    with engine().connect() as connection:
        views = endpoint_views(connection.execution_options(**{READ_ONLY: True}))
    rows = [view.as_dict() for view in views]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table("id", "url", "events", "state", "waiting", "delivered", "given up", "about")
    for row in rows:
        state = "on" if row["enabled"] else f"off: {row['disabled_reason']}"
        if row["enabled"] and row["failing_since"]:
            state = f"failing since {row['failing_since'][:16]}"
        m = row["messages"]
        table.add_row(
            str(row["id"]),
            cell(row["url"]),
            cell(",".join(row["events"])),
            cell(state),
            str(m["scheduled"] + m["sending"]),
            str(m["delivered"]),
            str(m["failed"]),
            cell(row["description"]),
        )
    console().print(table)
    if not rows:
        say("no endpoints: add one with `drip webhooks add URL`")


@app.command()
def remove(endpoint_id: IdArgument) -> None:
    """Remove an endpoint and its messages (delivered or waiting).

    Example: drip webhooks remove 3
    """
    from drip.sending import endpoints

    with engine().begin() as connection:
        endpoints.remove_endpoint(connection, endpoint_id)
    say(f"endpoint {endpoint_id} removed")


@app.command()
def test(endpoint_id: IdArgument) -> None:
    """POST a signed `webhook.test` event to an endpoint now, and show its answer: exit 0
    for a 2xx, 1 otherwise.

    Example: drip webhooks test 3
    """
    from drip.sending import endpoints
    from drip.sending.webhooks import Poster, send_test

    with engine().connect() as connection:
        found = endpoints.endpoint(connection, endpoint_id)
    poster = Poster()
    try:
        attempt = send_test(poster, found, now=datetime.now(UTC))
    finally:
        poster.close()
    if attempt.delivered:
        say(f"endpoint {endpoint_id}: delivered (HTTP {attempt.status})")
        return
    say(f"endpoint {endpoint_id}: not delivered: {attempt.error}")
    raise typer.Exit(1)


@app.command("rotate-secret")
def rotate_secret(endpoint_id: IdArgument) -> None:
    """Give an endpoint a new signing secret and print it, once. For 24 hours every
    message is signed with both, so the receiver can switch without missing one.

    Example: drip webhooks rotate-secret 3
    """
    from drip.sending import endpoints

    with engine().begin() as connection:
        secret = endpoints.rotate_secret(connection, endpoint_id, now=datetime.now(UTC))
    say(f"endpoint {endpoint_id}: new secret (the old one also signs for 24 hours):")
    typer.echo(secret)


@app.command()
def enable(endpoint_id: IdArgument) -> None:
    """Turn an endpoint back on after drip turned it off (it failed for 3 days): events
    from now on reach it; those given up stay given up.

    Example: drip webhooks enable 3
    """
    from drip.sending import endpoints

    with engine().begin() as connection:
        changed = endpoints.enable_endpoint(connection, endpoint_id)
    say(f"endpoint {endpoint_id}: {'on again' if changed else 'already on'}")
