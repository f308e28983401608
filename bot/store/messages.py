"""Messages: customer messages accepted durably, bot and agent messages, and their reads.

Every accepted customer message is written, with its full envelope, before the platform is
acknowledged; ``mark_handled`` records that a turn answered it, and :meth:`MessagesMixin.unhandled`
returns what a restart must enqueue again. Writes go through the group-commit writer (see
:mod:`bot.store.message_writes` for how a batch writes them); reads are prebuilt selects, run
straight through ``pysqlite`` on SQLite (:class:`~bot.store.sqlite.SqliteQuery`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa

from bot.envelope import InboundMessage, SessionKey
from bot.store.base import NewMessage, Role, StoredMessage
from bot.store.message_writes import Append, Inbound, MarkHandled, MessageWrites
from bot.store.rows import MESSAGE_COLUMNS, message_from_row, message_from_sqlite
from bot.store.sqlite import SqliteQuery
from bot.store.tables import messages

# Hot reads, built once (building a select costs more than running it on SQLite).
_SELECT_MESSAGES_ALL: Final = (
    sa.select(*MESSAGE_COLUMNS)
    .where(
        messages.c.session_key == sa.bindparam("b_session_key"),
        messages.c.seq > sa.bindparam("b_after"),
    )
    .order_by(messages.c.seq)
    .limit(sa.bindparam("b_limit"))
)
_SELECT_MESSAGES: Final = _SELECT_MESSAGES_ALL.where(messages.c.internal.is_(False))
_SELECT_RECENT: Final = (
    sa.select(*MESSAGE_COLUMNS)
    .where(
        messages.c.session_key == sa.bindparam("b_session_key"),
        messages.c.internal.is_(False),
    )
    .order_by(messages.c.seq.desc())
    .limit(sa.bindparam("b_limit"))
)
_SQLITE_MESSAGES: Final = SqliteQuery(_SELECT_MESSAGES)
_SQLITE_MESSAGES_ALL: Final = SqliteQuery(_SELECT_MESSAGES_ALL)
_SQLITE_RECENT: Final = SqliteQuery(_SELECT_RECENT)


class MessagesMixin(MessageWrites):
    """The message half of :class:`~bot.store.sql.SqlStore`: appends, recovery and reads."""

    async def append_inbound(self, msg: InboundMessage) -> StoredMessage | None:
        """Persist a customer message (and create or refresh its conversation) durably.

        Returns:
            The stored message, or None when ``(channel, account, event_id)`` was stored before
            (a duplicate; nothing is written).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """
        if msg.dedupe_key in self._dedupe:
            return None
        result: StoredMessage | None = await self._submit(Inbound(self._future(), msg))
        return result

    async def append(self, messages: Sequence[NewMessage]) -> list[StoredMessage]:
        """Persist bot, agent, system messages and notes, in order; seqs are assigned.

        A message whose ``event_id`` (idempotency key) is already stored for its session is not
        written again; the stored one is returned instead, with ``fresh=False``. Messages of a
        session that has no conversation yet (no customer message) are stored without one.
        """
        if not messages:
            return []
        result: list[StoredMessage] = await self._submit(Append(self._future(), messages))
        return result

    async def mark_handled(self, session_key: SessionKey, event_ids: Sequence[str]) -> None:
        """Record that turns covering these customer messages finished (group-committed)."""
        if event_ids:
            await self._submit(MarkHandled(self._future(), session_key, list(event_ids)))

    async def unhandled(self) -> list[InboundMessage]:
        """Customer messages accepted but not yet handled, by session then ``seq`` (recovery)."""
        m = messages.c
        stmt = (
            sa.select(m.inbound)
            .where(m.handled.is_(False), m.role == Role.CUSTOMER.value)
            .order_by(m.session_key, m.seq)
        )
        rows = await self._read(lambda conn: conn.execute(stmt).scalars().all())
        return [InboundMessage.model_validate(raw) for raw in rows]

    async def messages(
        self,
        session_key: SessionKey,
        *,
        after_seq: int = 0,
        limit: int = 200,
        include_internal: bool = False,
    ) -> list[StoredMessage]:
        """Messages of a session with ``seq > after_seq``, oldest first, at most ``limit``."""
        params = {"b_session_key": session_key, "b_after": after_seq, "b_limit": limit}
        if self._raw_sqlite:
            query = _SQLITE_MESSAGES_ALL if include_internal else _SQLITE_MESSAGES
            return await self._read(
                lambda conn: [message_from_sqlite(r) for r in query.rows(conn, params)]
            )
        stmt = _SELECT_MESSAGES_ALL if include_internal else _SELECT_MESSAGES
        return await self._read(
            lambda conn: [message_from_row(r) for r in conn.execute(stmt, params)]
        )

    async def recent(self, session_key: SessionKey, limit: int) -> list[StoredMessage]:
        """The ``limit`` newest messages of a session (notes excluded), oldest first."""
        params = {"b_session_key": session_key, "b_limit": limit}
        if self._raw_sqlite:
            rows = await self._read(
                lambda conn: [message_from_sqlite(r) for r in _SQLITE_RECENT.rows(conn, params)]
            )
        else:
            rows = await self._read(
                lambda conn: [message_from_row(r) for r in conn.execute(_SELECT_RECENT, params)]
            )
        rows.reverse()
        return rows
