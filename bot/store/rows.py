"""Row mappers: table rows to the store's records, and records to the rows a write inserts.

Two read shapes: SQLAlchemy rows (by column name, values already converted by the column
types), and raw ``pysqlite`` tuples of the SQLite hot path (:class:`bot.store.sqlite.SqliteQuery`),
whose values are the SQLite storage formats of :class:`~bot.store.engine.UtcDateTime` (ISO text)
and :data:`~bot.store.engine.JsonType` (JSON text).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from bot.envelope import Citation, InboundMessage, OutboundMessage, Participant, SessionKey
from bot.store.base import (
    Conversation,
    NewMessage,
    OutboxEntry,
    Role,
    SessionMode,
    StoredMessage,
)
from bot.store.engine import json_dumps, sqlite_stamp
from bot.store.tables import messages

MESSAGE_COLUMNS: Final = [c for c in messages.c if c.name not in ("inbound", "handled")]
"""The ``messages`` columns reads select, in table order (the raw SQLite mapper's positions)."""

MESSAGE_COLUMN_NAMES: Final = tuple(c.name for c in messages.columns)
"""Every ``messages`` column, in table order (the values of :func:`sqlite_message_row`)."""

_JSON_COLUMNS: Final = frozenset({"citations", "inbound"})
_BOOL_COLUMNS: Final = frozenset({"internal", "handled"})


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _citations(raw: Any) -> tuple[Citation, ...]:
    return tuple(Citation.model_validate(c) for c in raw or ())


def message_from_row(row: sa.Row[*tuple[Any, ...]]) -> StoredMessage:
    """A row of :data:`MESSAGE_COLUMNS` as a :class:`StoredMessage`."""
    return StoredMessage(
        session_key=SessionKey(row.session_key),
        seq=row.seq,
        role=Role(row.role),
        text=row.text,
        kind=row.kind,
        event_id=row.event_id,
        reply_to=row.reply_to,
        citations=_citations(row.citations),
        author=row.author,
        internal=bool(row.internal),
        created_at=utc(row.created_at),
    )


def outbox_entry_from_row(row: sa.Row[*tuple[Any, ...]]) -> OutboxEntry:
    """A row of ``outbox`` as an :class:`OutboxEntry`."""
    return OutboxEntry(
        id=int(row.id),
        session_key=SessionKey(row.session_key),
        channel=row.channel,
        message=OutboundMessage.model_validate(row.message),
        attempts=row.attempts,
        next_attempt_at=utc(row.next_attempt_at),
        created_at=utc(row.created_at),
        last_error=row.last_error,
        claim=row.claim,
    )


def conversation_from_row(row: sa.Row[*tuple[Any, ...]]) -> Conversation:
    """A row of ``conversations`` as a :class:`Conversation`."""
    return Conversation(
        session_key=SessionKey(row.session_key),
        channel=row.channel,
        account=row.account,
        customer=Participant.model_validate(row.customer),
        mode=SessionMode(row.mode),
        assigned_agent=row.assigned_agent,
        ticket_id=row.ticket_id,
        escalation_reason=row.escalation_reason,
        queued_at=utc(row.queued_at) if row.queued_at is not None else None,
        last_seq=row.last_seq,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        meta=dict(row.meta or {}),
    )


def _sqlite_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def message_from_sqlite(r: tuple[Any, ...]) -> StoredMessage:
    """A raw SQLite row of :data:`MESSAGE_COLUMNS` as a :class:`StoredMessage`."""
    return StoredMessage(
        session_key=SessionKey(r[0]),
        seq=r[1],
        role=Role(r[2]),
        text=r[3],
        kind=r[4],
        event_id=r[5],
        reply_to=r[8],
        citations=_citations(json.loads(r[9])) if r[9] is not None else (),
        author=r[10],
        internal=bool(r[11]),
        created_at=datetime.fromisoformat(r[12]).replace(tzinfo=UTC),
    )


def conversation_from_sqlite(r: tuple[Any, ...]) -> Conversation:
    """A raw SQLite row of ``conversations`` as a :class:`Conversation`."""
    created_at = _sqlite_time(r[10])
    updated_at = _sqlite_time(r[11])
    assert created_at is not None
    assert updated_at is not None
    return Conversation(
        session_key=SessionKey(r[0]),
        channel=r[1],
        account=r[2],
        customer=Participant.model_validate_json(r[3]),
        mode=SessionMode(r[4]),
        assigned_agent=r[5],
        ticket_id=r[6],
        escalation_reason=r[7],
        queued_at=_sqlite_time(r[8]),
        last_seq=r[9],
        created_at=created_at,
        updated_at=updated_at,
        meta=json.loads(r[12]) if r[12] is not None else {},
    )


def new_conversation_row(
    msg: InboundMessage, customer: Participant, now: datetime
) -> dict[str, Any]:
    """The ``conversations`` row a session's first customer message creates (mode ``bot``).

    ``last_seq`` is 0 here; the writer sets it once the batch's seqs are assigned.
    """
    return {
        "session_key": msg.session_key,
        "channel": msg.channel,
        "account": msg.account,
        "customer": customer,
        "mode": SessionMode.BOT.value,
        "assigned_agent": None,
        "ticket_id": None,
        "escalation_reason": None,
        "queued_at": None,
        "last_seq": 0,
        "created_at": now,
        "updated_at": now,
        "meta": {},
    }


def inbound_row(msg: InboundMessage, seq: int, now: datetime) -> dict[str, Any]:
    """The ``messages`` row of a customer message (unhandled, with its full envelope)."""
    return {
        "session_key": msg.session_key,
        "seq": seq,
        "role": Role.CUSTOMER.value,
        "text": msg.text,
        "kind": "message",
        "event_id": msg.event_id,
        "channel": msg.channel,
        "account": msg.account,
        "reply_to": msg.reply_to,
        "citations": None,
        "author": None,
        "internal": False,
        "created_at": now,
        "inbound": msg,
        "handled": False,
    }


def append_row(x: NewMessage, seq: int, now: datetime) -> dict[str, Any]:
    """The ``messages`` row of a bot, agent or system message or a note (handled)."""
    return {
        "session_key": x.session_key,
        "seq": seq,
        "role": x.role.value,
        "text": x.text,
        "kind": x.kind,
        "event_id": x.event_id,
        "channel": None,
        "account": None,
        "reply_to": x.reply_to,
        "citations": x.citations or None,
        "author": x.author,
        "internal": x.internal,
        "created_at": now,
        "inbound": None,
        "handled": True,
    }


def sqlite_message_row(row: dict[str, Any]) -> tuple[Any, ...]:
    """A ``messages`` row dict as positional SQLite values, in :data:`MESSAGE_COLUMN_NAMES` order.

    Values are converted as the column types would (``UtcDateTime``, ``JsonType``, ``Boolean``).

    Raises:
        pydantic_core.PydanticSerializationError: (a ValueError) for a value JSON cannot hold.
    """
    out: list[Any] = []
    for name in MESSAGE_COLUMN_NAMES:
        value = row[name]
        if value is None:
            out.append(None)
        elif name in _JSON_COLUMNS:
            out.append(json_dumps(value))
        elif name in _BOOL_COLUMNS:
            out.append(1 if value else 0)
        elif isinstance(value, datetime):
            out.append(sqlite_stamp(value))
        else:
            out.append(value)
    return tuple(out)
