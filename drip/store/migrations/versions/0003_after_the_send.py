"""After the send: class clicks (the first time each lesson's class link was followed),
mail events (bounces and complaints) and the webhook events already handled.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from drip.core.models import UTCDateTime

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
    op.create_table(
        "mailevent",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.Integer(),
            sa.ForeignKey("subscriber.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("delivery_id", sa.Integer(), sa.ForeignKey("delivery.id", ondelete="SET NULL")),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("diagnostic", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_mailevent_subscriber_id", "mailevent", ["subscriber_id"])
    op.create_table(
        "webhookevent",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("provider", "event_id", name="uq_webhookevent_provider_event"),
    )


def downgrade() -> None:
    op.drop_table("webhookevent")
    op.drop_table("mailevent")
    op.drop_table("click")
