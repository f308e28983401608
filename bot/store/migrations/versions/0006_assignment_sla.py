"""Assignment and SLAs: teams, agent status, conversation routing, SLA policies and timers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 13:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001: ``UtcDateTime`` is ISO 8601 text on SQLite and ``timestamptz`` elsewhere; JSON is
# JSONB on PostgreSQL.
UTC_TIME = sa.DateTime(timezone=True).with_variant(sa.String(length=26), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

TABLES = (
    "teams",
    "team_members",
    "agent_status",
    "conversation_routing",
    "sla_policies",
    "sla_timers",
)


def _missing(name: str) -> bool:
    """False when ``SqlStore.open()`` of this version made the table before the upgrade ran."""
    return context.is_offline_mode() or not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    """Apply this revision (tables ``SqlStore.open()`` made already are left as they are)."""
    if _missing("teams"):
        op.create_table(
            "teams",
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("display_name", sa.String(), nullable=False),
            sa.Column("channels", JSON, nullable=False),
            sa.Column("topics", JSON, nullable=False),
            sa.Column("created_at", UTC_TIME, nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )
    if _missing("team_members"):
        op.create_table(
            "team_members",
            sa.Column("team", sa.String(), nullable=False),
            sa.Column("agent", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("team", "agent"),
        )
    if _missing("agent_status"):
        op.create_table(
            "agent_status",
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("presence", sa.String(length=16), nullable=False),
            sa.Column("capacity", sa.Integer(), nullable=True),
            sa.Column("seen_at", UTC_TIME, nullable=True),
            sa.Column("last_assigned_at", UTC_TIME, nullable=True),
            sa.Column("updated_at", UTC_TIME, nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )
    if _missing("conversation_routing"):
        op.create_table(
            "conversation_routing",
            sa.Column("session_key", sa.String(), nullable=False),
            sa.Column("team", sa.String(), nullable=True),
            sa.Column("priority", sa.String(length=16), nullable=False),
            sa.Column("updated_at", UTC_TIME, nullable=False),
            sa.PrimaryKeyConstraint("session_key"),
        )
    if _missing("sla_policies"):
        op.create_table(
            "sla_policies",
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("team", sa.String(), nullable=True),
            sa.Column("priority", sa.String(length=16), nullable=True),
            sa.Column("first_response_s", sa.Integer(), nullable=False),
            sa.Column("resolution_s", sa.Integer(), nullable=False),
            sa.Column("business_hours", JSON, nullable=True),
            sa.Column("escalate_to", sa.String(length=16), nullable=True),
            sa.Column("created_at", UTC_TIME, nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )
    if _missing("sla_timers"):
        op.create_table(
            "sla_timers",
            sa.Column("session_key", sa.String(), nullable=False),
            sa.Column("policy", sa.String(), nullable=False),
            sa.Column("started_at", UTC_TIME, nullable=False),
            sa.Column("first_response_due", UTC_TIME, nullable=False),
            sa.Column("resolution_due", UTC_TIME, nullable=False),
            sa.Column("first_response_at", UTC_TIME, nullable=True),
            sa.Column("stopped_at", UTC_TIME, nullable=True),
            sa.Column("first_response_breached_at", UTC_TIME, nullable=True),
            sa.Column("resolution_breached_at", UTC_TIME, nullable=True),
            sa.PrimaryKeyConstraint("session_key"),
        )
        op.create_index(
            "ix_sla_timers_resolution_due", "sla_timers", ["resolution_due"], unique=False
        )


def downgrade() -> None:
    """Revert this revision (teams, presence, routing and SLA data are lost)."""
    op.drop_index("ix_sla_timers_resolution_due", table_name="sla_timers")
    for name in reversed(TABLES):
        op.drop_table(name)
