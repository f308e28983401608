"""Agent profiles: the console role of each agent account (admin, agent, viewer).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001: ``UtcDateTime`` is ISO 8601 text on SQLite and ``timestamptz`` elsewhere.
UTC_TIME = sa.DateTime(timezone=True).with_variant(sa.String(length=26), "sqlite")


def upgrade() -> None:
    """Apply this revision (nothing to do when ``SqlStore.open()`` made the table already)."""
    if not context.is_offline_mode() and sa.inspect(op.get_bind()).has_table("agent_profiles"):
        return
    op.create_table(
        "agent_profiles",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    """Revert this revision (every account becomes an ``agent`` again)."""
    op.drop_table("agent_profiles")
