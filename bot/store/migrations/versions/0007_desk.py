"""Desk: CSAT ratings, canned replies and LLM usage (bot.desk.tables).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 13:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001: ``UtcDateTime`` is ISO 8601 text on SQLite and ``timestamptz`` elsewhere.
UTC_TIME = sa.DateTime(timezone=True).with_variant(sa.String(length=26), "sqlite")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _exists(name: str) -> bool:
    return not context.is_offline_mode() and sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    """Apply this revision (tables the desk already made on first use are kept)."""
    if not _exists("csat_ratings"):
        op.create_table(
            "csat_ratings",
            sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
            sa.Column("session_key", sa.String(), nullable=False),
            sa.Column("channel", sa.String(), nullable=False),
            sa.Column("agent", sa.String(), nullable=True),
            sa.Column("rating", sa.Integer(), nullable=False),
            sa.Column("asked_at", UTC_TIME, nullable=False),
            sa.Column("rated_at", UTC_TIME, nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_csat_ratings_rated_at", "csat_ratings", ["rated_at"])
        op.create_index("ix_csat_ratings_session_key", "csat_ratings", ["session_key"])
    if not _exists("canned_replies"):
        op.create_table(
            "canned_replies",
            sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
            sa.Column("shortcut", sa.String(length=64), nullable=False),
            sa.Column("title", sa.String(length=200), nullable=False),
            sa.Column("body", sa.Text(), nullable=False),
            sa.Column("updated_by", sa.String(), nullable=False),
            sa.Column("updated_at", UTC_TIME, nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ux_canned_replies_shortcut", "canned_replies", ["shortcut"], unique=True)
    if not _exists("llm_usage"):
        op.create_table(
            "llm_usage",
            sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
            sa.Column("at", UTC_TIME, nullable=False),
            sa.Column("model", sa.String(), nullable=False),
            sa.Column("purpose", sa.String(length=32), nullable=False),
            sa.Column("input_tokens", sa.Integer(), nullable=False),
            sa.Column("output_tokens", sa.Integer(), nullable=False),
            sa.Column("cost_usd", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_llm_usage_at", "llm_usage", ["at"])


def downgrade() -> None:
    """Revert this revision (ratings, canned replies and usage records are dropped)."""
    op.drop_table("llm_usage")
    op.drop_table("canned_replies")
    op.drop_table("csat_ratings")
