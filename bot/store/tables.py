"""The store's tables: conversations, messages, agents, agent roles, audit, outbox (SQLAlchemy).

:data:`metadata` is what ``SqlStore.open()`` creates when missing and what the Alembic
migrations (:mod:`bot.store.migrate`) manage, with the tables plugin packages register.
"""

from __future__ import annotations

import sqlalchemy as sa

from bot.store.engine import JsonType, UtcDateTime

metadata = sa.MetaData()
"""Every table of the store (plugin packages keep their own ``MetaData``)."""

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("session_key", sa.String, primary_key=True),
    sa.Column("channel", sa.String, nullable=False),
    sa.Column("account", sa.String, nullable=False),
    sa.Column("customer", JsonType, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("assigned_agent", sa.String),
    sa.Column("ticket_id", sa.String),
    sa.Column("escalation_reason", sa.String),
    sa.Column("queued_at", UtcDateTime),
    sa.Column("last_seq", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("meta", JsonType, nullable=False),
    sa.Index("ix_conversations_updated_at", "updated_at"),
    sa.Index("ix_conversations_mode_updated_at", "mode", "updated_at"),
)
"""One row per session."""

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("session_key", sa.String, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("event_id", sa.String),
    # Set on customer messages only: with ``event_id`` they form the dedupe key. NULLs are
    # distinct in unique indexes on SQLite and PostgreSQL, so other rows never collide.
    sa.Column("channel", sa.String),
    sa.Column("account", sa.String),
    sa.Column("reply_to", sa.String),
    sa.Column("citations", JsonType),  # NULL when none: most rows skip a JSON parse
    sa.Column("author", sa.String),
    sa.Column("internal", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("inbound", JsonType),
    sa.Column("handled", sa.Boolean, nullable=False),
    sa.Index("ux_messages_dedupe", "channel", "account", "event_id", unique=True),
    sa.Index("ux_messages_idempotency", "session_key", "event_id", unique=True),
    sa.Index("ix_messages_handled", "handled"),
)
"""Every message of every session, ``seq`` 1, 2, 3... per session."""

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("display_name", sa.String, nullable=False),
    sa.Column("password_hash", sa.String, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
"""Human agent accounts of the console."""

agent_profiles = sa.Table(
    "agent_profiles",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)
"""Console roles of agent accounts (Alembic 0003); an account without a row is an ``agent``.

A table of its own rather than a column of ``agents``: ``SqlStore.open()`` creates missing
tables but never alters existing ones, so an embedded database made by an older version keeps
working before ``switchboard db upgrade`` runs.
"""

audit = sa.Table(
    "audit",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String, nullable=False),
    sa.Column("action", sa.String, nullable=False),
    sa.Column("session_key", sa.String),
    sa.Column("detail", JsonType, nullable=False),
    # The hash chain (Alembic 0004; see bot.store.audit): NULL only on rows written before it
    # existed, which the next append chains.
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite")),
    sa.Column("seal", sa.String(64)),
    sa.Column("salt", sa.String(32)),
    sa.Column("prev_hash", sa.String(64)),
    sa.Column("hash", sa.String(64)),
    sa.Index("ix_audit_session_key", "session_key", "id"),
    sa.Index("ux_audit_seq", "seq", unique=True),
)
"""Who did what to which session, and when: a tamper-evident hash chain (:mod:`bot.store.audit`).

``seal`` is the HMAC-SHA256, keyed by the row's random ``salt``, of the personal part
(``session_key`` and ``detail``); the chain's hashes cover the seal, not the personal part, so
erasing a customer (``salt``, ``session_key`` and ``detail`` cleared) leaves the chain intact.
"""

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("session_key", sa.String, nullable=False),
    sa.Column("channel", sa.String, nullable=False),
    sa.Column("message", JsonType, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("claim", sa.String),
    sa.Index("ix_outbox_session_key", "session_key", "id"),
    sa.Index("ix_outbox_next_attempt_at", "next_attempt_at"),
)
"""Outbound messages a platform did not take, until they are sent or given up (Alembic 0002)."""

# --- assignment and SLAs (Alembic 0006): teams, presence, routing, SLA policies and timers ----

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("display_name", sa.String, nullable=False),
    sa.Column("channels", JsonType, nullable=False),
    sa.Column("topics", JsonType, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
"""Inboxes of human agents, per channel or topic."""

team_members = sa.Table(
    "team_members",
    metadata,
    sa.Column("team", sa.String, primary_key=True),
    sa.Column("agent", sa.String, primary_key=True),
)
"""Which agents work which team's queue."""

agent_status = sa.Table(
    "agent_status",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("presence", sa.String(16), nullable=False),
    sa.Column("capacity", sa.Integer),
    sa.Column("seen_at", UtcDateTime),
    sa.Column("last_assigned_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)
"""Presence and capacity of agents; its row is locked while one is given a conversation."""

conversation_routing = sa.Table(
    "conversation_routing",
    metadata,
    sa.Column("session_key", sa.String, primary_key=True),
    sa.Column("team", sa.String),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)
"""The team queue and priority of escalated conversations."""

sla_policies = sa.Table(
    "sla_policies",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("team", sa.String),
    sa.Column("priority", sa.String(16)),
    sa.Column("first_response_s", sa.Integer, nullable=False),
    sa.Column("resolution_s", sa.Integer, nullable=False),
    sa.Column("business_hours", JsonType),
    sa.Column("escalate_to", sa.String(16)),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
"""First-response and resolution targets per team and priority."""

sla_timers = sa.Table(
    "sla_timers",
    metadata,
    sa.Column("session_key", sa.String, primary_key=True),
    sa.Column("policy", sa.String, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("first_response_due", UtcDateTime, nullable=False),
    sa.Column("resolution_due", UtcDateTime, nullable=False),
    sa.Column("first_response_at", UtcDateTime),
    sa.Column("stopped_at", UtcDateTime),
    sa.Column("first_response_breached_at", UtcDateTime),
    sa.Column("resolution_breached_at", UtcDateTime),
    sa.Index("ix_sla_timers_resolution_due", "resolution_due"),
)
"""SLA clocks of escalated conversations (stored, so they survive restarts)."""
