"""Ticket links: tickets kept in Zendesk or Jira, and the webhook events already applied.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001: ``UtcDateTime`` is ISO 8601 text on SQLite and ``timestamptz`` elsewhere; JSON is
# JSONB on PostgreSQL.
UTC_TIME = sa.DateTime(timezone=True).with_variant(sa.String(length=26), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Apply this revision (nothing to do when the backend made the tables on first use)."""
    if not context.is_offline_mode() and sa.inspect(op.get_bind()).has_table("ticket_links"):
        return
    op.create_table(
        "ticket_links",
        sa.Column("num", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("remote_id", sa.String(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("session_key", sa.String(), nullable=True),
        sa.Column("requester_id", sa.String(), nullable=False),
        sa.Column("requester_channel", sa.String(), nullable=False),
        sa.Column("requester", JSON, nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC_TIME, nullable=False),
        sa.Column("lease_until", UTC_TIME, nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("num"),
        sa.UniqueConstraint("backend", "remote_id", name="uq_ticket_links_remote"),
    )
    op.create_index(
        "ix_ticket_links_requester",
        "ticket_links",
        ["requester_channel", "requester_id", "num"],
        unique=False,
    )
    op.create_index(
        "ix_ticket_links_due", "ticket_links", ["state", "next_attempt_at"], unique=False
    )
    op.create_table(
        "ticket_sync_events",
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("received_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("backend", "event_id"),
    )


def downgrade() -> None:
    """Revert this revision (links of external tickets and pending creations are lost)."""
    op.drop_table("ticket_sync_events")
    op.drop_index("ix_ticket_links_due", table_name="ticket_links")
    op.drop_index("ix_ticket_links_requester", table_name="ticket_links")
    op.drop_table("ticket_links")
