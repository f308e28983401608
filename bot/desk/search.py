"""Conversation search for the console: text, customer, channel, status and date range.

One SQL query over the store's ``conversations`` and ``messages`` tables (SQLite and
PostgreSQL alike): case-insensitive substring matches (``LIKE`` on lower-cased text, with
``%`` and ``_`` in the query taken literally), newest activity first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.base import Conversation, SessionMode
from bot.store.rows import conversation_from_row
from bot.store.tables import conversations, messages

MAX_RESULTS = 100
SNIPPET_CHARS = 160


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What to look for; every field is optional and they combine with AND.

    Attributes:
        text: words in any message of the conversation (internal notes included).
        customer: part of the customer's name, e-mail address or platform id.
        channel: the channel plugin name (``webchat``, ``email``...).
        status: the session mode (``bot``, ``queued``, ``human``, ``closed``).
        since: activity (``updated_at``) at or after this time (UTC).
        until: activity before this time (UTC).
        limit: at most this many results (1..100).
    """

    text: str = ""
    customer: str = ""
    channel: str | None = None
    status: SessionMode | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One conversation found: the record and, for a text search, its newest matching message.

    Attributes:
        conversation: the conversation.
        seq: the ``seq`` of the matching message, or None.
        snippet: up to :data:`SNIPPET_CHARS` characters around the match, or None.
    """

    conversation: Conversation
    seq: int | None
    snippet: str | None


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _snippet(text: str, needle: str) -> str:
    at = max(0, text.lower().find(needle.lower()))
    start = max(0, at - SNIPPET_CHARS // 3)
    cut = text[start : start + SNIPPET_CHARS]
    return ("…" if start else "") + cut + ("…" if start + SNIPPET_CHARS < len(text) else "")


async def search(engine: AsyncEngine, query: SearchQuery) -> list[SearchHit]:
    """Conversations matching ``query``, newest activity first.

    Args:
        engine: the store's engine (:attr:`bot.store.sql.SqlStore.engine`).
        query: the filters.

    Returns:
        At most ``query.limit`` hits.
    """
    c = conversations.c
    m = messages.c
    stmt = sa.select(conversations)
    if query.channel:
        stmt = stmt.where(c.channel == query.channel)
    if query.status is not None:
        stmt = stmt.where(c.mode == query.status.value)
    if query.since is not None:
        stmt = stmt.where(c.updated_at >= query.since)
    if query.until is not None:
        stmt = stmt.where(c.updated_at < query.until)
    if query.customer.strip():
        like = _like(query.customer.strip())
        stmt = stmt.where(
            sa.or_(
                *(
                    sa.func.lower(c.customer[field].as_string()).like(like, escape="\\")
                    for field in ("name", "email", "id")
                )
            )
        )
    text = query.text.strip()
    if text:
        matching = (
            sa.select(m.session_key)
            .where(sa.func.lower(m.text).like(_like(text), escape="\\"))
            .where(m.kind != "typing")
        )
        stmt = stmt.where(c.session_key.in_(matching))
    limit = min(MAX_RESULTS, max(1, query.limit))
    stmt = stmt.order_by(c.updated_at.desc(), c.session_key).limit(limit)
    hits: list[SearchHit] = []
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
        for row in rows:
            conv = conversation_from_row(row)
            seq = snippet = None
            if text:
                found = (
                    await conn.execute(
                        sa.select(m.seq, m.text)
                        .where(m.session_key == conv.session_key)
                        .where(sa.func.lower(m.text).like(_like(text), escape="\\"))
                        .order_by(m.seq.desc())
                        .limit(1)
                    )
                ).first()
                if found is not None:
                    seq, snippet = int(found[0]), _snippet(found[1], text)
            hits.append(SearchHit(conv, seq, snippet))
    return hits
