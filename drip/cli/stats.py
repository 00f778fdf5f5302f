"""``drip stats``: how many subscribers, enrollments and lessons are in each state."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from drip.cli._common import console, engine


def stats(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Counts of subscribers, enrollments and deliveries by status.

    Example: drip stats --json
    """
    from rich.table import Table

    from drip.db import READ_ONLY
    from drip.enrollment import counts

    with engine().connect() as connection:
        result = counts(connection.execution_options(**{READ_ONLY: True}))
    if as_json:
        console().print_json(json.dumps(result))
        return
    table = Table("what", "status", "count")
    for what, by_status in result.items():
        for status, count in sorted(by_status.items()):
            table.add_row(what, status, str(count))
    console().print(table)
