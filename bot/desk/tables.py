"""The desk's tables: CSAT ratings, canned replies, LLM usage (Alembic revision 0007).

They live in the hub's database next to the store's tables, in a ``MetaData`` of their own
registered under the ``switchboard.tables`` entry point (``desk``), so ``switchboard db
upgrade`` migrates them and :class:`bot.desk.store.DeskStore` creates them when missing.
"""

from __future__ import annotations

import sqlalchemy as sa

from bot.store.engine import UtcDateTime

metadata = sa.MetaData()
"""The desk's tables (see the module docstring)."""

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

csat_ratings = sa.Table(
    "csat_ratings",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("session_key", sa.String, nullable=False),
    sa.Column("channel", sa.String, nullable=False),
    sa.Column("agent", sa.String),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("asked_at", UtcDateTime, nullable=False),
    sa.Column("rated_at", UtcDateTime, nullable=False),
    sa.Index("ix_csat_ratings_rated_at", "rated_at"),
    sa.Index("ix_csat_ratings_session_key", "session_key"),
)
"""One row per answered survey: 1 (poor) .. 5 (excellent), the agent who resolved."""

canned_replies = sa.Table(
    "canned_replies",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("shortcut", sa.String(64), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("updated_by", sa.String, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ux_canned_replies_shortcut", "shortcut", unique=True),
)
"""Canned replies admins manage; ``body`` may hold ``{customer.name}``-style placeholders."""

llm_usage = sa.Table(
    "llm_usage",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("model", sa.String, nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Index("ix_llm_usage_at", "at"),
)
"""One row per LLM call: tokens in and out and litellm's cost estimate in US dollars."""
