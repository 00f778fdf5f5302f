"""The outbox: every email is a delivery row; signups keep their own details and consent.

Adds ``delivery.kind`` (existing rows are lessons), ``delivery.signup_id``, the partial
index the web process's prompt sender reads, and the ``signup`` table (with a partial
index of the signups not yet filed), and ``setting`` (the signing key's fingerprint);
drops three indexes a unique index already covers.
Each enrollment still waiting for its confirmation gets a signup row whose uid is the
enrollment's, so confirmation links already sent keep working.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from drip.core.models import TRANSACTIONAL_PENDING, UTCDateTime

#: the signups not yet filed, as this revision named the column (0007 renames it)
UNFILED = sa.text("filed_at IS NULL")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "setting",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "signup",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(32), unique=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("course_slug", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64)),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("ip", sa.String(64)),
        sa.Column("user_agent", sa.String(512)),
        sa.Column("source", sa.String(512)),
        sa.Column(
            "subscriber_id", sa.Integer(), sa.ForeignKey("subscriber.id", ondelete="CASCADE")
        ),
        sa.Column("filed_at", UTCDateTime()),
        sa.Column("confirmed_at", UTCDateTime()),
    )
    op.create_index("ix_signup_subscriber_id", "signup", ["subscriber_id"])
    op.create_index(
        "ix_signup_unfiled", "signup", ["id"], sqlite_where=UNFILED, postgresql_where=UNFILED
    )
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="lesson"))
        batch.add_column(sa.Column("signup_id", sa.Integer()))
        batch.create_foreign_key(
            "fk_delivery_signup_id_signup", "signup", ["signup_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_delivery_signup_id", ["signup_id"])
    op.create_index(
        "ix_delivery_transactional",
        "delivery",
        ["due_at"],
        sqlite_where=TRANSACTIONAL_PENDING,
        postgresql_where=TRANSACTIONAL_PENDING,
    )
    # Indexes whose work a unique index's leading column already does: dropped, so every
    # insert maintains fewer b-trees.
    op.drop_index("ix_delivery_enrollment_id", table_name="delivery")
    op.drop_index("ix_enrollment_subscriber_id", table_name="enrollment")
    op.drop_index("ix_subscriber_status", table_name="subscriber")
    op.execute(
        "INSERT INTO signup (uid, email, subscriber_id, course_slug, name, timezone, "
        "created_at, filed_at, ip, user_agent, source) "
        "SELECT e.uid, s.email, s.id, e.course_slug, s.name, s.timezone, "
        "COALESCE(s.consent_at, e.created_at), COALESCE(s.consent_at, e.created_at), "
        "s.consent_ip, s.consent_user_agent, s.consent_source "
        "FROM enrollment e JOIN subscriber s ON s.id = e.subscriber_id "
        "WHERE e.status = 'pending'"
    )


def downgrade() -> None:
    op.create_index("ix_subscriber_status", "subscriber", ["status"])
    op.create_index("ix_enrollment_subscriber_id", "enrollment", ["subscriber_id"])
    op.create_index("ix_delivery_enrollment_id", "delivery", ["enrollment_id"])
    op.drop_index("ix_delivery_transactional", table_name="delivery")
    op.execute("DELETE FROM delivery WHERE kind != 'lesson'")
    with op.batch_alter_table("delivery") as batch:
        batch.drop_index("ix_delivery_signup_id")
        batch.drop_constraint("fk_delivery_signup_id_signup", type_="foreignkey")
        batch.drop_column("signup_id")
        batch.drop_column("kind")
    op.drop_table("signup")
    op.drop_table("setting")
