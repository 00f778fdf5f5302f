"""Initial schema: subscriber, enrollment, delivery.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from drip.core.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriber",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(32), unique=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("confirmed_at", UTCDateTime()),
        sa.Column("unsubscribed_at", UTCDateTime()),
        sa.Column("suppressed_at", UTCDateTime()),
        sa.Column("suppressed_reason", sa.Text()),
        sa.Column("confirmation_sent_at", UTCDateTime()),
        sa.Column("consent_at", UTCDateTime()),
        sa.Column("consent_ip", sa.String(64)),
        sa.Column("consent_user_agent", sa.String(512)),
        sa.Column("consent_source", sa.String(512)),
    )
    op.create_index("ix_subscriber_status", "subscriber", ["status"])
    op.create_table(
        "enrollment",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(32), unique=True),
        sa.Column(
            "subscriber_id",
            sa.Integer(),
            sa.ForeignKey("subscriber.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("course_slug", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("completed_at", UTCDateTime()),
        sa.Column("cancelled_at", UTCDateTime()),
        sa.UniqueConstraint("subscriber_id", "course_slug"),
    )
    op.create_index("ix_enrollment_subscriber_id", "enrollment", ["subscriber_id"])
    op.create_index("ix_enrollment_course_slug", "enrollment", ["course_slug"])
    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "enrollment_id",
            sa.Integer(),
            sa.ForeignKey("enrollment.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("day_id", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("claimed_until", UTCDateTime()),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("failed_at", UTCDateTime()),
        sa.Column("cancelled_at", UTCDateTime()),
        sa.Column("message_id", sa.String(255)),
        sa.Column("smtp_response", sa.Text()),
        sa.Column("last_error", sa.Text()),
        sa.UniqueConstraint("enrollment_id", "day_id", name="uq_delivery_enrollment_day"),
    )
    op.create_index("ix_delivery_enrollment_id", "delivery", ["enrollment_id"])
    op.create_index("ix_delivery_status_due_at", "delivery", ["status", "due_at"])
    op.create_index("ix_delivery_status_claimed_until", "delivery", ["status", "claimed_until"])


def downgrade() -> None:
    op.drop_table("delivery")
    op.drop_table("enrollment")
    op.drop_table("subscriber")
