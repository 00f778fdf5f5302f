"""A partial index for the emails given up on, by (failed_at, id): the dashboard lists the
latest of them from it instead of reading the whole outbox. Failures are few, so the
index is small and a send never writes to it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from drip.core.models import FAILED

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_delivery_failed",
        "delivery",
        ["failed_at", "id"],
        sqlite_where=FAILED,
        postgresql_where=FAILED,
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_failed", table_name="delivery")
