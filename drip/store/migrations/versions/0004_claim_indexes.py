"""Partial indexes for the claim: scheduled rows by (due_at, id) and claims in flight
by id, in place of (status, due_at) and (status, claimed_until); and the signup index
only for the deliveries that have a signup.

A claim then walks only the scheduled rows it takes (an ordered index range, no sort of
the whole backlog), and a sent row leaves these indexes: recording a send updates two
indexes (the primary key and the (enrollment, day) unique one), not five.

On PostgreSQL the upgrade holds the delivery table for the time it takes to build the
three indexes (seconds for a few hundred thousand rows): stop the senders and the web
process for it, as for any ``drip db upgrade``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from drip.core.models import HAS_SIGNUP, SCHEDULED, SENDING

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_delivery_status_due_at", table_name="delivery")
    op.drop_index("ix_delivery_status_claimed_until", table_name="delivery")
    op.drop_index("ix_delivery_signup_id", table_name="delivery")
    for name, columns, where in (
        ("ix_delivery_scheduled", ["due_at", "id"], SCHEDULED),
        ("ix_delivery_sending", ["id"], SENDING),
        ("ix_delivery_signup_id", ["signup_id"], HAS_SIGNUP),
    ):
        op.create_index(name, "delivery", columns, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name in ("ix_delivery_signup_id", "ix_delivery_sending", "ix_delivery_scheduled"):
        op.drop_index(name, table_name="delivery")
    op.create_index("ix_delivery_signup_id", "delivery", ["signup_id"])
    op.create_index("ix_delivery_status_claimed_until", "delivery", ["status", "claimed_until"])
    op.create_index("ix_delivery_status_due_at", "delivery", ["status", "due_at"])
