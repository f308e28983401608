"""Outbox: outbound messages a platform did not take, until they are sent or given up.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The application's column types, written out so this revision never changes with them (as in
# 0001): ``UtcDateTime`` is ISO 8601 text on SQLite and ``timestamptz`` elsewhere; JSON is
# JSONB on PostgreSQL.
UTC_TIME = sa.DateTime(timezone=True).with_variant(sa.String(length=26), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Apply this revision.

    ``SqlStore.open()`` creates missing tables itself, so a process of the new version that
    opened the database before ``switchboard db upgrade`` ran has made the table already:
    then there is nothing to do.
    """
    if not context.is_offline_mode() and sa.inspect(op.get_bind()).has_table("outbox"):
        return
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("session_key", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("message", JSON, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC_TIME, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claim", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_next_attempt_at", "outbox", ["next_attempt_at"], unique=False)
    op.create_index("ix_outbox_session_key", "outbox", ["session_key", "id"], unique=False)


def downgrade() -> None:
    """Revert this revision (entries still waiting are lost)."""
    op.drop_index("ix_outbox_session_key", table_name="outbox")
    op.drop_index("ix_outbox_next_attempt_at", table_name="outbox")
    op.drop_table("outbox")
