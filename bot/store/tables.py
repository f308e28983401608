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
