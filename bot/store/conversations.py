"""Conversations: one record per session, and who answers it (its mode).

Mode changes are compare-and-set ``UPDATE ... WHERE mode IN (...)`` calls on the group-commit
writer, atomic across processes. The router asks for a session's mode on every turn, so reads
are cheap: on SQLite (one writing process, reads and writes on the loop's thread) rows are
served from a write-through cache; on a server database concurrent lookups share one query
(:class:`~bot.store.postgres.BatchedLookup`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from cachetools import LRUCache

from bot.envelope import SessionKey
from bot.errors import Conflict, NotFound
from bot.store.base import Conversation, SessionMode
from bot.store.batcher import SESSION_CACHE_SIZE, BatchResult, Call, Request, WriteBatcher
from bot.store.engine import UtcDateTime
from bot.store.postgres import KEYS_ARRAY, BatchedLookup
from bot.store.rows import conversation_from_row, conversation_from_sqlite
from bot.store.sqlite import SqliteQuery
from bot.store.tables import conversations

_SELECT_CONVERSATION: Final = sa.select(conversations).where(
    conversations.c.session_key == sa.bindparam("b_session_key")
)
_SQLITE_CONVERSATION: Final = SqliteQuery(_SELECT_CONVERSATION)
_SELECT_CONVERSATIONS_ANY: Final = sa.select(conversations).where(
    conversations.c.session_key == sa.any_(sa.bindparam("b_keys", type_=KEYS_ARRAY))
)
"""Conversation rows of many sessions on PostgreSQL (one prepared statement)."""


def _conversations_by_key(
    keys: list[SessionKey], conn: sa.Connection
) -> dict[SessionKey, Conversation | None]:
    found = conn.execute(_SELECT_CONVERSATIONS_ANY, {"b_keys": keys})
    return {row.session_key: conversation_from_row(row) for row in found}


class ConversationsMixin(WriteBatcher):
    """The conversation half of :class:`~bot.store.sql.SqlStore`: records and modes."""

    def _init_conversations(self) -> None:
        """Set up the conversation cache (SQLite) and coalesced lookups (server databases)."""
        # Conversation rows, kept only where this process is the one writer (SQLite) and reads
        # and writes run on the loop's thread, so a cached row is never older than the file.
        self._convs: LRUCache[SessionKey, Conversation] = LRUCache(SESSION_CACHE_SIZE)
        # Server databases: conversation lookups waiting for the next coalesced query.
        self._conv_reads: BatchedLookup[Conversation | None] = BatchedLookup(
            self._read, _conversations_by_key, None, "store-conversation-reads"
        )

    async def set_mode(
        self,
        session_key: SessionKey,
        mode: SessionMode,
        *,
        expect: Sequence[SessionMode] | None = None,
        agent: str | None = None,
        reason: str | None = None,
        ticket_id: str | None = None,
    ) -> Conversation:
        """Change who answers a session (compare-and-set when ``expect`` is given).

        ``human`` sets ``assigned_agent`` to ``agent`` (kept when None); other modes clear it.
        ``queued`` sets ``queued_at`` unless already queued; ``bot`` clears ``queued_at`` and
        ``escalation_reason``. ``reason`` and ``ticket_id`` are stored when given. The check and
        the change are one ``UPDATE ... WHERE mode IN (...)``, atomic across processes.

        Raises:
            bot.errors.NotFound: when the session does not exist.
            bot.errors.Conflict: when the current mode is not in ``expect``.
        """
        c = conversations.c

        def run(conn: sa.Connection, now: datetime) -> Conversation:
            values: dict[str, Any] = {"mode": mode.value, "updated_at": now}
            if mode is SessionMode.HUMAN:
                if agent is not None:
                    values["assigned_agent"] = agent
            else:
                values["assigned_agent"] = None
            if mode is SessionMode.QUEUED:
                values["queued_at"] = sa.case(
                    (c.mode == SessionMode.QUEUED.value, c.queued_at),
                    else_=sa.literal(now, UtcDateTime()),
                )
            elif mode is SessionMode.BOT:
                values["queued_at"] = None
                values["escalation_reason"] = None
            if reason is not None:
                values["escalation_reason"] = reason
            if ticket_id is not None:
                values["ticket_id"] = ticket_id
            stmt = conversations.update().where(c.session_key == session_key).values(values)
            if expect is not None:
                stmt = stmt.where(c.mode.in_([m.value for m in expect]))
            if conn.execute(stmt).rowcount == 0:
                current = conn.scalar(sa.select(c.mode).where(c.session_key == session_key))
                if current is None:
                    raise NotFound(f"no conversation {session_key!r}")
                wanted = ", ".join(m.value for m in expect or ())
                raise Conflict(f"session {session_key!r} is {current}, expected one of {wanted}")
            row = conn.execute(sa.select(conversations).where(c.session_key == session_key)).one()
            return conversation_from_row(row)

        result: Conversation = await self._submit(Call(self._future(), run, session_key))
        return result

    async def set_meta(self, session_key: SessionKey, key: str, value: Any) -> None:
        """Store one channel-specific value on a conversation (JSON-serializable).

        Raises:
            bot.errors.NotFound: when the session does not exist.
            bot.errors.PayloadInvalid: when ``value`` is not JSON-serializable.
        """
        c = conversations.c

        def run(conn: sa.Connection, now: datetime) -> None:
            meta = conn.scalar(sa.select(c.meta).where(c.session_key == session_key))
            if meta is None:
                raise NotFound(f"no conversation {session_key!r}")
            conn.execute(
                conversations.update()
                .where(c.session_key == session_key)
                .values(meta={**meta, key: value}, updated_at=now)
            )

        await self._submit(Call(self._future(), run, session_key))

    async def conversation(self, session_key: SessionKey) -> Conversation | None:
        """The conversation record, or None when the session never wrote.

        On SQLite (one writing process, reads and writes on the loop's thread) rows are served
        from a write-through cache: the router asks for the session mode on every turn.
        """
        cached = self._convs.get(session_key)
        if cached is not None:
            return cached
        params = {"b_session_key": session_key}

        def run(conn: sa.Connection) -> Conversation | None:
            if self._raw_sqlite:
                rows = _SQLITE_CONVERSATION.rows(conn, params)
                conv = conversation_from_sqlite(rows[0]) if rows else None
                if conv is not None:
                    self._convs[session_key] = conv  # same step as the read: never stale
                return conv
            row = conn.execute(_SELECT_CONVERSATION, params).one_or_none()
            return conversation_from_row(row) if row is not None else None

        if self._raw_sqlite:
            return await self._read(run)
        # Server database: concurrent lookups (every turn asks for its session's mode) share one
        # query; lookups made while it runs form the next one.
        return await self._conv_reads.get(session_key)

    async def conversations(
        self, *, modes: Sequence[SessionMode] | None = None, limit: int = 200
    ) -> list[Conversation]:
        """Conversations, newest activity (``updated_at``) first, optionally filtered by mode."""
        c = conversations.c
        stmt = sa.select(conversations).order_by(c.updated_at.desc(), c.session_key).limit(limit)
        if modes is not None:
            stmt = stmt.where(c.mode.in_([m.value for m in modes]))
        return await self._read(
            lambda conn: [conversation_from_row(r) for r in conn.execute(stmt)]
        )

    def _refresh_conversations(self, batch: list[Request], result: BatchResult) -> None:
        """After a commit: update the cached rows of sessions it wrote messages to.

        Rows a serial call may have changed are dropped (read again on next use).
        """
        for key, state in result.sessions.items():
            cached = self._convs.get(key)
            if cached is not None and result.written_at is not None:
                self._convs[key] = dataclasses.replace(
                    cached,
                    last_seq=state.last_seq,
                    updated_at=result.written_at,
                    customer=result.customers.get(key, cached.customer),
                )
        for req in batch:
            if isinstance(req, Call) and req.conversation is not None:
                self._convs.pop(req.conversation, None)
