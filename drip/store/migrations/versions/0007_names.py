"""Names that say what they hold: an outbox row's ``key`` (a lesson's day id, or
``kind:…`` for every other email), and a signup's ``processed_at`` with the index of the
signups not yet processed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # RENAME COLUMN keeps the rows, the unique (enrollment, key) constraint and every index
    # in place, on SQLite (3.25 and later) and PostgreSQL alike: no table is rebuilt
    op.execute('ALTER TABLE delivery RENAME COLUMN day_id TO "key"')
    op.drop_index("ix_signup_unfiled", table_name="signup")
    op.execute("ALTER TABLE signup RENAME COLUMN filed_at TO processed_at")
    unprocessed = sa.text("processed_at IS NULL")
    op.create_index(
        "ix_signup_unprocessed",
        "signup",
        ["id"],
        sqlite_where=unprocessed,
        postgresql_where=unprocessed,
    )


def downgrade() -> None:
    op.drop_index("ix_signup_unprocessed", table_name="signup")
    op.execute("ALTER TABLE signup RENAME COLUMN processed_at TO filed_at")
    unfiled = sa.text("filed_at IS NULL")
    op.create_index(
        "ix_signup_unfiled", "signup", ["id"], sqlite_where=unfiled, postgresql_where=unfiled
    )
    op.execute('ALTER TABLE delivery RENAME COLUMN "key" TO day_id')
