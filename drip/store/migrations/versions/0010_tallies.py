"""Counts kept by triggers (``drip.store.tallies``), so the operator's reads do not grow
with the list; what erased subscribers had added to the metrics' counters moves into
them. An enrollment keeps the last lesson before its subscriber unsubscribed; an email's
bounces, and the latest bounces, are found by an index.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from drip.store import installation, tallies

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("enrollment", sa.Column("left_after", sa.String(100), nullable=True))
    op.create_index("ix_mailevent_delivery_id", "mailevent", ["delivery_id"])
    op.create_index("ix_mailevent_created_at", "mailevent", ["created_at", "id"])
    # the last lesson sent to each enrollment its subscriber left (as the funnel read it)
    op.execute(
        "UPDATE enrollment SET left_after = (SELECT d.key FROM delivery d"
        " WHERE d.enrollment_id = enrollment.id AND d.kind = 'lesson' AND d.status = 'sent'"
        " ORDER BY d.id DESC LIMIT 1)"
        " WHERE status = 'cancelled' AND subscriber_id IN"
        " (SELECT id FROM subscriber WHERE status = 'unsubscribed')"
    )
    op.create_table(
        "tally",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("labels", sa.String(400), primary_key=True),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    op.create_table(
        "tallychange",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("labels", sa.String(400), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    # what erased subscribers had added to the metrics' counters: kept, as events; the
    # triggers are installed and everything else counted from the rows right after the
    # migrations, by the rules of the drip running them (drip.store.tallies)
    op.execute("INSERT INTO tally (name, labels, n) SELECT counter, labels, count FROM erasedcount")
    op.drop_table("erasedcount")


def downgrade() -> None:
    connection = op.get_bind()
    tallies.fold(connection)
    erased = tallies.totals(connection)
    erased.subtract(tallies.recount(connection))
    op.create_table(
        "erasedcount",
        sa.Column("counter", sa.String(64), primary_key=True),
        sa.Column("labels", sa.String(128), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    rows = [
        {"counter": name, "labels": labels, "count": n}
        for (name, labels), n in sorted(erased.items())
        if name.startswith("drip_") and n > 0
    ]
    if rows:
        connection.execute(
            sa.text(
                "INSERT INTO erasedcount (counter, labels, count)"
                " VALUES (:counter, :labels, :count)"
            ),
            rows,
        )
    tallies.uninstall(connection)
    installation.forget(connection, tallies.INSTALLED)
    op.drop_table("tallychange")
    op.drop_table("tally")
    op.drop_index("ix_mailevent_created_at", "mailevent")
    op.drop_index("ix_mailevent_delivery_id", "mailevent")
    op.drop_column("enrollment", "left_after")
