"""What erased subscribers had added to the metrics' counters, so that erasing one never
makes a counter go down (Prometheus would read it as a reset).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasedcount",
        sa.Column("counter", sa.String(64), primary_key=True),
        sa.Column("labels", sa.String(128), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erasedcount")
