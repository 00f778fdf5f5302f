"""Class clicks: the first time each lesson's class link was followed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from drip.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "click",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "delivery_id",
            sa.Integer(),
            sa.ForeignKey("delivery.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("link", sa.String(32), nullable=False),
        sa.Column("clicked_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("delivery_id", "link", name="uq_click_delivery_link"),
    )


def downgrade() -> None:
    op.drop_table("click")
