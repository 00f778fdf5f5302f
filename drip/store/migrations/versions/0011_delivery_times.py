"""SQLite: the outbox's times in the one text format. Emails queued several to a
statement (the next lessons a send run queues, an import's first lessons) had every row
after the first stored as the driver writes an aware time (``2026-11-25 07:00:00+00:00``)
instead of naive UTC to the microsecond;
SQLite compares and sorts times as text, and a time read back drops its offset. Each is
rewritten as the instant it names, in UTC. PostgreSQL stores typed times: nothing to do.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: the text SQLAlchemy writes for a time on SQLite (26 characters, microseconds after a dot)
_WELL_FORMED = "length({0}) = 26 AND substr({0}, 20, 1) = '.'"
_BATCH = 5000


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    for column in ("due_at", "created_at"):
        select = sa.text(
            f"SELECT id, {column} FROM delivery WHERE {column} IS NOT NULL"
            f" AND NOT ({_WELL_FORMED.format(column)}) AND id > :last ORDER BY id LIMIT {_BATCH}"
        )
        update = sa.text(f"UPDATE delivery SET {column} = :value WHERE id = :id")
        last = 0
        while rows := connection.execute(select, {"last": last}).all():
            connection.execute(
                update, [{"id": id_, "value": _utc_text(value)} for id_, value in rows]
            )
            last = rows[-1][0]


def _utc_text(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:  # no time drip wrote: left as it is
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def downgrade() -> None:
    """Nothing to undo: the times keep their instants, in the format every other write uses."""
