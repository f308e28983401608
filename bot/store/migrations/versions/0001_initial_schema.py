"""Initial schema: conversations, messages, agents, audit, tickets, ticket_comments.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 02:39:41.523251
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The application's column types, written out so this revision never changes with them:
# ``UtcDateTime`` is ISO 8601 text on SQLite and ``timestamptz`` elsewhere; JSON is JSONB on
# PostgreSQL.
UTC_TIME = sa.DateTime(timezone=True).with_variant(sa.String(length=26), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "agents",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("display_name", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("session_key", sa.String(), nullable=True),
        sa.Column("detail", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_session_key", "audit", ["session_key", "id"], unique=False)
    op.create_table(
        "conversations",
        sa.Column("session_key", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("customer", JSON, nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("assigned_agent", sa.String(), nullable=True),
        sa.Column("ticket_id", sa.String(), nullable=True),
        sa.Column("escalation_reason", sa.String(), nullable=True),
        sa.Column("queued_at", UTC_TIME, nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.PrimaryKeyConstraint("session_key"),
    )
    op.create_index(
        "ix_conversations_mode_updated_at", "conversations", ["mode", "updated_at"], unique=False
    )
    op.create_index("ix_conversations_updated_at", "conversations", ["updated_at"], unique=False)
    op.create_table(
        "messages",
        sa.Column("session_key", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(), nullable=True),
        sa.Column("channel", sa.String(), nullable=True),
        sa.Column("account", sa.String(), nullable=True),
        sa.Column("reply_to", sa.String(), nullable=True),
        sa.Column("citations", JSON, nullable=True),
        sa.Column("author", sa.String(), nullable=True),
        sa.Column("internal", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("inbound", JSON, nullable=True),
        sa.Column("handled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("session_key", "seq"),
    )
    op.create_index("ix_messages_handled", "messages", ["handled"], unique=False)
    op.create_index(
        "ux_messages_dedupe", "messages", ["channel", "account", "event_id"], unique=True
    )
    op.create_index(
        "ux_messages_idempotency", "messages", ["session_key", "event_id"], unique=True
    )
    op.create_table(
        "tickets",
        sa.Column("num", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("requester_id", sa.String(), nullable=False),
        sa.Column("requester_channel", sa.String(), nullable=False),
        sa.Column("requester", JSON, nullable=False),
        sa.Column("session_key", sa.String(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("num"),
    )
    op.create_index(
        "ix_tickets_requester",
        "tickets",
        ["requester_channel", "requester_id", "num"],
        unique=False,
    )
    op.create_table(
        "ticket_comments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_num", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_num"],
            ["tickets.num"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_ticket_comments_ticket", "ticket_comments", ["ticket_num", "id"], unique=False
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_ticket_comments_ticket", table_name="ticket_comments")
    op.drop_table("ticket_comments")
    op.drop_index("ix_tickets_requester", table_name="tickets")
    op.drop_table("tickets")
    op.drop_index("ux_messages_idempotency", table_name="messages")
    op.drop_index("ux_messages_dedupe", table_name="messages")
    op.drop_index("ix_messages_handled", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_conversations_updated_at", table_name="conversations")
    op.drop_index("ix_conversations_mode_updated_at", table_name="conversations")
    op.drop_table("conversations")
    op.drop_index("ix_audit_session_key", table_name="audit")
    op.drop_table("audit")
    op.drop_table("agents")
