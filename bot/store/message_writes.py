"""The message part of a write batch: dedupe, ``seq`` assignment, rows and conversation rows.

Customer messages, bot/agent messages and ``mark_handled`` updates of one batch are written with
a few ``executemany`` statements; on SQLite the three statements every message costs run
straight through ``pysqlite`` (:func:`~bot.store.sqlite.sqlite_executemany`, values converted
as the column types would), as SQLAlchemy's per-row parameter processing cost more than SQLite's
own work. Same connection, same transaction; PostgreSQL runs the SQLAlchemy statements.

Sequence numbers are assigned by the writer from a bounded per-session counter cache (reloaded
from ``max(seq)`` on a miss). On SQLite that assumes one writing process per database, as in the
embedded setup; a second writer on the same session makes a batch hit the primary key, and the
request is retried once with reloaded counters. On a server database several processes write,
so a batch locks its sessions' conversation rows and reads their counters under the lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from cachetools import LRUCache, TTLCache

from bot.config import Settings
from bot.envelope import InboundMessage, Participant, SessionKey
from bot.store.base import NewMessage, Role, StoredMessage
from bot.store.batcher import (
    SESSION_CACHE_SIZE,
    BatchResult,
    Request,
    SessionState,
    WriteBatcher,
)
from bot.store.engine import JsonType, UtcDateTime, sqlite_stamp
from bot.store.postgres import KEYS_ARRAY
from bot.store.rows import (
    MESSAGE_COLUMN_NAMES,
    MESSAGE_COLUMNS,
    append_row,
    inbound_row,
    message_from_row,
    new_conversation_row,
    sqlite_message_row,
)
from bot.store.sqlite import sqlite_executemany
from bot.store.tables import conversations, messages


@dataclass(slots=True, eq=False)
class Inbound(Request):
    """``append_inbound``: one customer message."""

    msg: InboundMessage

    def sessions(self) -> Iterable[SessionKey]:
        """Its session."""
        return (self.msg.session_key,)


@dataclass(slots=True, eq=False)
class Append(Request):
    """``append``: bot, agent, system messages and notes, in order."""

    items: Sequence[NewMessage]

    def sessions(self) -> Iterable[SessionKey]:
        """The sessions of its messages."""
        return {m.session_key for m in self.items}


@dataclass(slots=True, eq=False)
class MarkHandled(Request):
    """``mark_handled``: customer messages of one session whose turns finished."""

    session_key: SessionKey
    event_ids: Sequence[str]


_INSERT_MESSAGES: Final = messages.insert()
_INSERT_CONVERSATIONS: Final = conversations.insert()
_UPDATE_CONV_CUSTOMER: Final = (
    conversations.update()
    .where(conversations.c.session_key == sa.bindparam("b_session_key"))
    .values(
        customer=sa.bindparam("b_customer", type_=JsonType),
        last_seq=sa.bindparam("b_last_seq"),
        updated_at=sa.bindparam("b_updated_at", type_=UtcDateTime),
    )
)
_UPDATE_CONV_SEQ: Final = (
    conversations.update()
    .where(conversations.c.session_key == sa.bindparam("b_session_key"))
    .values(
        last_seq=sa.bindparam("b_last_seq"),
        updated_at=sa.bindparam("b_updated_at", type_=UtcDateTime),
    )
)
_MARK_HANDLED: Final = (
    messages.update()
    .where(
        messages.c.session_key == sa.bindparam("b_session_key"),
        messages.c.event_id == sa.bindparam("b_event_id"),
        messages.c.role == Role.CUSTOMER.value,
    )
    .values(handled=True)
)
_LOCK_CONVERSATIONS_ANY: Final = (
    sa.select(conversations.c.session_key, conversations.c.last_seq)
    .where(conversations.c.session_key == sa.any_(sa.bindparam("b_keys", type_=KEYS_ARRAY)))
    .order_by(conversations.c.session_key)
    .with_for_update()
)
"""Lock the conversation rows of a write batch, in key order (writers never deadlock), and read
their ``last_seq`` under the lock."""
_MAX_SEQ_ANY: Final = (
    sa.select(messages.c.session_key, sa.func.max(messages.c.seq))
    .where(messages.c.session_key == sa.any_(sa.bindparam("b_keys", type_=KEYS_ARRAY)))
    .group_by(messages.c.session_key)
)

# SQLite hot-path writes (see the module docstring).
_SQLITE_INSERT_MESSAGE: Final = (
    f"INSERT INTO messages ({', '.join(MESSAGE_COLUMN_NAMES)}) "
    f"VALUES ({', '.join('?' for _ in MESSAGE_COLUMN_NAMES)})"
)
_SQLITE_UPDATE_CONV_SEQ: Final = (
    "UPDATE conversations SET last_seq = ?, updated_at = ? WHERE session_key = ?"
)
_SQLITE_MARK_HANDLED: Final = (
    "UPDATE messages SET handled = 1 WHERE session_key = ? AND event_id = ? "
    f"AND role = '{Role.CUSTOMER.value}'"
)


class MessageWrites(WriteBatcher):
    """Writes the messages of a batch; keeps the per-session counters and the dedupe cache."""

    def _init_message_writes(self, settings: Settings) -> None:
        """Set up the caches: ``dedupe_ttl_s`` and ``dedupe_max_entries`` bound the dedupe one."""
        self._sessions: LRUCache[SessionKey, SessionState] = LRUCache(SESSION_CACHE_SIZE)
        self._dedupe: TTLCache[tuple[str, str, str], bool] = TTLCache(
            maxsize=max(1, settings.dedupe_max_entries), ttl=settings.dedupe_ttl_s
        )

    def _remember_writes(self, result: BatchResult) -> None:
        """After a commit: the sessions' counters and the customer messages' dedupe keys."""
        for key, state in result.sessions.items():
            self._sessions[key] = state
        for dedupe_key in result.dedupe_keys:
            self._dedupe[dedupe_key] = True

    def _write_handled(self, conn: sa.Connection, batch: list[Request]) -> None:
        """The batch's ``mark_handled`` updates."""
        handled = [
            {"b_session_key": r.session_key, "b_event_id": event_id}
            for r in batch
            if isinstance(r, MarkHandled)
            for event_id in r.event_ids
        ]
        if handled:
            if self._raw_sqlite:
                sqlite_executemany(
                    conn,
                    _SQLITE_MARK_HANDLED,
                    [(h["b_session_key"], h["b_event_id"]) for h in handled],
                )
            else:
                conn.execute(_MARK_HANDLED, handled)

    def _stored_keys(
        self, conn: sa.Connection, keys: set[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        """The dedupe keys among ``keys`` that are stored.

        Separate ``IN`` lists, then an exact filter here: SQLite searches the unique index that
        way, while a row-value ``IN`` makes it scan the index.
        """
        if not keys:
            return set()
        m = messages.c
        found = conn.execute(
            sa.select(m.channel, m.account, m.event_id).where(
                m.channel.in_({k[0] for k in keys}),
                m.account.in_({k[1] for k in keys}),
                m.event_id.in_({k[2] for k in keys}),
            )
        )
        return {(r[0], r[1], r[2]) for r in found} & keys

    def _stored_by_key(
        self, conn: sa.Connection, pairs: set[tuple[SessionKey, str]]
    ) -> dict[tuple[str, str], StoredMessage]:
        """Stored messages by ``(session_key, event_id)`` among ``pairs``."""
        if not pairs:
            return {}
        m = messages.c
        found = conn.execute(
            sa.select(*MESSAGE_COLUMNS).where(
                m.session_key.in_({p[0] for p in pairs}),
                m.event_id.in_({p[1] for p in pairs}),
            )
        )
        return {
            (r.session_key, r.event_id): message_from_row(r)
            for r in found
            if (r.session_key, r.event_id) in pairs
        }

    def _session_states(
        self, conn: sa.Connection, keys: set[SessionKey]
    ) -> dict[SessionKey, SessionState]:
        """Working copies of the sessions' counters; misses are loaded from the database."""
        states: dict[SessionKey, SessionState] = {}
        missing: list[SessionKey] = []
        m, c = messages.c, conversations.c
        if not self._raw_sqlite:
            # Several processes write one server database (ingress and workers): the cache may be
            # stale. Lock the sessions' conversation rows, in key order so writers never
            # deadlock, then read max(seq) under the lock (READ COMMITTED: a fresh snapshot).
            # A conversation row's last_seq is its session's max(seq) (every write batch updates
            # both); sessions without a row (bot-only histories) read max(seq).
            for key, last_seq in conn.execute(_LOCK_CONVERSATIONS_ANY, {"b_keys": sorted(keys)}):
                states[key] = SessionState(last_seq, True)
            bare = [k for k in keys if k not in states]
            if bare:
                found = {r[0]: r[1] for r in conn.execute(_MAX_SEQ_ANY, {"b_keys": bare})}
                for key in bare:
                    states[key] = SessionState(found.get(key) or 0, False)
            return states
        for key in keys:
            cached = self._sessions.get(key)
            if cached is None:
                missing.append(key)
            else:
                states[key] = SessionState(cached.last_seq, cached.has_conversation)
        if missing:
            seqs: dict[str, int] = {
                r[0]: r[1]
                for r in conn.execute(
                    sa.select(m.session_key, sa.func.max(m.seq))
                    .where(m.session_key.in_(missing))
                    .group_by(m.session_key)
                )
            }
            convs = set(
                conn.execute(sa.select(c.session_key).where(c.session_key.in_(missing))).scalars()
            )
            for key in missing:
                states[key] = SessionState(seqs.get(key) or 0, key in convs)
        return states

    def _write_messages(
        self,
        conn: sa.Connection,
        batch: list[Request],
        now: datetime,
        result: BatchResult,
        *,
        checked: bool,
    ) -> None:
        """Dedupe, assign seqs, and write the batch's messages and their conversations."""
        inbound = [r for r in batch if isinstance(r, Inbound)]
        appends = [r for r in batch if isinstance(r, Append)]
        stored_keys: set[tuple[str, str, str]] = set()
        by_key: dict[tuple[str, str], StoredMessage] = {}
        if checked:
            stored_keys = self._stored_keys(conn, {r.msg.dedupe_key for r in inbound})
            by_key = self._stored_by_key(
                conn,
                {(x.session_key, x.event_id) for r in appends for x in r.items if x.event_id},
            )
        keys: set[SessionKey] = {r.msg.session_key for r in inbound}
        keys.update(x.session_key for r in appends for x in r.items)
        states = self._session_states(conn, keys)
        rows: list[dict[str, Any]] = []
        new_convs: dict[SessionKey, dict[str, Any]] = {}
        customers: dict[SessionKey, Participant] = {}

        for i, req in enumerate(batch):
            if isinstance(req, Inbound):
                msg = req.msg
                result.dedupe_keys.append(msg.dedupe_key)
                if msg.dedupe_key in stored_keys:
                    continue  # a duplicate (stored before, or earlier in this batch): None
                stored_keys.add(msg.dedupe_key)
                sk = msg.session_key
                state = states[sk]
                state.last_seq += 1
                customer = msg.sender
                if sk in new_convs:
                    new_convs[sk]["customer"] = customer
                elif state.has_conversation:
                    customers[sk] = customer
                else:
                    state.has_conversation = True
                    new_convs[sk] = new_conversation_row(msg, customer, now)
                rows.append(inbound_row(msg, state.last_seq, now))
                stored = StoredMessage(
                    session_key=sk,
                    seq=state.last_seq,
                    role=Role.CUSTOMER,
                    text=msg.text,
                    kind="message",
                    event_id=msg.event_id,
                    reply_to=msg.reply_to,
                    citations=(),
                    author=None,
                    internal=False,
                    created_at=now,
                )
                by_key[(sk, msg.event_id)] = result.outcomes[i] = stored
            elif isinstance(req, Append):
                out: list[StoredMessage] = []
                for x in req.items:
                    if x.event_id is not None:
                        earlier = by_key.get((x.session_key, x.event_id))
                        if earlier is not None:
                            out.append(dataclasses.replace(earlier, fresh=False))
                            continue
                    state = states[x.session_key]
                    state.last_seq += 1
                    rows.append(append_row(x, state.last_seq, now))
                    stored = StoredMessage(
                        session_key=x.session_key,
                        seq=state.last_seq,
                        role=x.role,
                        text=x.text,
                        kind=x.kind,
                        event_id=x.event_id,
                        reply_to=x.reply_to,
                        citations=tuple(x.citations),
                        author=x.author,
                        internal=x.internal,
                        created_at=now,
                    )
                    if x.event_id is not None:
                        by_key[(x.session_key, x.event_id)] = stored
                    out.append(stored)
                result.outcomes[i] = out

        if new_convs:
            for sk, conv in new_convs.items():
                conv["last_seq"] = states[sk].last_seq
            conn.execute(_INSERT_CONVERSATIONS, list(new_convs.values()))
        with_customer: list[dict[str, Any]] = []
        seq_only: list[dict[str, Any]] = []
        for sk, state in states.items():
            if sk in new_convs or not state.has_conversation:
                continue
            params = {"b_session_key": sk, "b_last_seq": state.last_seq, "b_updated_at": now}
            if sk in customers:
                params["b_customer"] = customers[sk]
                with_customer.append(params)
            else:
                seq_only.append(params)
        result.written_at = now
        result.customers = customers
        if with_customer:
            conn.execute(_UPDATE_CONV_CUSTOMER, with_customer)
        if seq_only:
            if self._raw_sqlite:
                sqlite_executemany(
                    conn,
                    _SQLITE_UPDATE_CONV_SEQ,
                    [(p["b_last_seq"], sqlite_stamp(now), p["b_session_key"]) for p in seq_only],
                )
            else:
                conn.execute(_UPDATE_CONV_SEQ, seq_only)
        if rows:
            if self._raw_sqlite:
                sqlite_executemany(
                    conn, _SQLITE_INSERT_MESSAGE, [sqlite_message_row(r) for r in rows]
                )
            else:
                conn.execute(_INSERT_MESSAGES, rows)
        result.sessions = states
