"""The subscriber's own controls: an enrollment's run of the course (restarts), a pause,
its own hour for lessons, and how often it was paused and restarted.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from drip.core.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN, each with its default: no table is rebuilt, on SQLite or PostgreSQL
    op.add_column("enrollment", sa.Column("run", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("enrollment", sa.Column("paused_until", UTCDateTime(), nullable=True))
    op.add_column("enrollment", sa.Column("send_at", sa.String(5), nullable=True))
    op.add_column(
        "enrollment", sa.Column("pauses", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "enrollment", sa.Column("restarts", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    for column in ("restarts", "pauses", "send_at", "paused_until", "run"):
        op.drop_column("enrollment", column)
