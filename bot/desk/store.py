"""The desk's rows in the hub's database: CSAT ratings, canned replies, LLM usage.

:class:`DeskStore` shares the SQL store's engine (same database, its own tables from
:mod:`bot.desk.tables`, created on first use). These writes are rare next to messages, so each
call is its own short transaction, as in the local ticket backend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.desk.tables import canned_replies, csat_ratings, llm_usage, metadata
from bot.envelope import SessionKey, utcnow
from bot.errors import BackendUnavailable, ConfigError, Conflict, NotFound
from bot.store.base import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rating:
    """One answered CSAT survey.

    Attributes:
        session_key: the conversation rated.
        channel: its channel.
        agent: login name of the agent who resolved it (None when the bot did).
        rating: 1 (poor) .. 5 (excellent).
        asked_at: when the survey was sent (UTC).
        rated_at: when the customer answered (UTC).
    """

    session_key: SessionKey
    channel: str
    agent: str | None
    rating: int
    asked_at: datetime
    rated_at: datetime


@dataclass(frozen=True, slots=True)
class CannedReply:
    """A canned reply: ``shortcut`` (what agents type after ``/``), ``title``, ``body``."""

    id: int
    shortcut: str
    title: str
    body: str
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Usage:
    """One LLM call: ``input_tokens`` and ``output_tokens`` (tokens), ``cost_usd`` (dollars)."""

    at: datetime
    model: str
    purpose: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


class DeskStore:
    """The desk's tables on the hub's SQL database.

    Args:
        store: the hub's store; a :class:`~bot.store.sql.SqlStore` (anything with an ``engine``
            attribute holding an ``AsyncEngine``, read at each call, so the store may be opened
            after this object is made).

    Every method raises :class:`~bot.errors.BackendUnavailable` when the database fails.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ready: AsyncEngine | None = None
        self._lock = asyncio.Lock()

    @property
    def engine(self) -> AsyncEngine:
        """The store's engine.

        Raises:
            bot.errors.ConfigError: the store is not a SQL store.
            RuntimeError: the store is not open.
        """
        engine = getattr(self._store, "engine", None)
        if not isinstance(engine, AsyncEngine):
            raise ConfigError("the desk needs the SQL store")
        return engine

    async def open(self) -> AsyncEngine:
        """Create the desk's tables if missing (also done on first use); returns the engine."""
        engine = self.engine
        if self._ready is engine:
            return engine
        async with self._lock:
            if self._ready is not engine:
                try:
                    async with engine.begin() as conn:
                        await conn.run_sync(metadata.create_all)
                except (OSError, DBAPIError) as exc:
                    raise BackendUnavailable(f"cannot open the desk tables: {exc}") from exc
                self._ready = engine
        return engine

    @asynccontextmanager
    async def connect(self, *, begin: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (in a transaction when ``begin``) with database errors converted.

        Raises:
            bot.errors.BackendUnavailable: the database failed.
        """
        engine = await self.open()
        try:
            async with engine.begin() if begin else engine.connect() as conn:
                yield conn
        except IntegrityError:
            raise
        except (OSError, DBAPIError) as exc:
            raise BackendUnavailable(f"desk database error: {type(exc).__name__}") from exc

    # --- CSAT -----------------------------------------------------------------------------------

    async def record_rating(self, rating: Rating) -> None:
        """Store one answered survey; a survey (session key, time asked) is stored once.

        A second call for the same survey (a turn re-run after a crash) changes nothing. The
        check and the insert share one transaction; a session's turns never run at once (its
        lane is serial), so no two calls for one survey race.
        """
        c = csat_ratings.c
        async with self.connect(begin=True) as conn:
            stored = await conn.scalar(
                sa.select(sa.func.count()).where(
                    c.session_key == rating.session_key, c.asked_at == rating.asked_at
                )
            )
            if stored:
                return
            await conn.execute(
                csat_ratings.insert().values(
                    session_key=rating.session_key,
                    channel=rating.channel,
                    agent=rating.agent,
                    rating=rating.rating,
                    asked_at=rating.asked_at,
                    rated_at=rating.rated_at,
                )
            )

    async def ratings(
        self, *, since: datetime, until: datetime, session_key: SessionKey | None = None
    ) -> list[Rating]:
        """Ratings given in ``[since, until)``, oldest first (of one conversation if given)."""
        c = csat_ratings.c
        query = sa.select(csat_ratings).where(c.rated_at >= since, c.rated_at < until)
        if session_key is not None:
            query = query.where(c.session_key == session_key)
        async with self.connect() as conn:
            rows = (await conn.execute(query.order_by(c.rated_at, c.id))).mappings().all()
        return [
            Rating(
                SessionKey(r["session_key"]),
                r["channel"],
                r["agent"],
                int(r["rating"]),
                r["asked_at"],
                r["rated_at"],
            )
            for r in rows
        ]

    # --- canned replies -------------------------------------------------------------------------

    async def canned(self, query: str = "", *, limit: int = 50) -> list[CannedReply]:
        """Canned replies whose shortcut, title or body contains ``query`` (case-insensitive)."""
        c = canned_replies.c
        stmt = sa.select(canned_replies).order_by(c.shortcut).limit(limit)
        if query.strip():
            like = f"%{_escape_like(query.strip().lower())}%"
            stmt = stmt.where(
                sa.or_(
                    sa.func.lower(c.shortcut).like(like, escape="\\"),
                    sa.func.lower(c.title).like(like, escape="\\"),
                    sa.func.lower(c.body).like(like, escape="\\"),
                )
            )
        async with self.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_canned(r) for r in rows]

    async def canned_reply(self, reply_id: int) -> CannedReply:
        """One canned reply.

        Raises:
            bot.errors.NotFound: no reply has that id.
        """
        async with self.connect() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(canned_replies).where(canned_replies.c.id == reply_id)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no canned reply {reply_id}")
        return _canned(row)

    async def save_canned(
        self, *, shortcut: str, title: str, body: str, actor: str, reply_id: int | None = None
    ) -> CannedReply:
        """Create a canned reply, or replace the one with ``reply_id``.

        Raises:
            bot.errors.Conflict: another reply has that shortcut.
            bot.errors.NotFound: no reply has ``reply_id``.
        """
        values = {
            "shortcut": shortcut,
            "title": title,
            "body": body,
            "updated_by": actor,
            "updated_at": utcnow(),
        }
        try:
            async with self.connect(begin=True) as conn:
                if reply_id is None:
                    result = await conn.execute(canned_replies.insert().values(**values))
                    inserted = result.inserted_primary_key
                    assert inserted is not None
                    reply_id = int(inserted[0])
                else:
                    result = await conn.execute(
                        canned_replies.update()
                        .where(canned_replies.c.id == reply_id)
                        .values(**values)
                    )
                    if result.rowcount == 0:
                        raise NotFound(f"no canned reply {reply_id}")
        except IntegrityError as exc:
            raise Conflict(f"a canned reply with shortcut {shortcut!r} exists") from exc
        return await self.canned_reply(reply_id)

    async def delete_canned(self, reply_id: int) -> None:
        """Delete a canned reply.

        Raises:
            bot.errors.NotFound: no reply has that id.
        """
        async with self.connect(begin=True) as conn:
            result = await conn.execute(
                canned_replies.delete().where(canned_replies.c.id == reply_id)
            )
        if result.rowcount == 0:
            raise NotFound(f"no canned reply {reply_id}")

    # --- LLM usage ------------------------------------------------------------------------------

    async def record_usage(self, usage: Usage) -> None:
        """Store one LLM call's token counts and cost."""
        async with self.connect(begin=True) as conn:
            await conn.execute(
                llm_usage.insert().values(
                    at=usage.at,
                    model=usage.model,
                    purpose=usage.purpose,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cost_usd=usage.cost_usd,
                )
            )

    def usage_recorder(self) -> Callable[[str, str, int, int, float], Awaitable[None]]:
        """A :data:`bot.agent.usage.UsageFn` that stores each call (:meth:`record_usage`)."""

        async def record(
            model: str, purpose: str, input_tokens: int, output_tokens: int, cost: float
        ) -> None:
            await self.record_usage(
                Usage(utcnow(), model, purpose, input_tokens, output_tokens, cost)
            )

        return record

    async def usage(self, *, since: datetime, until: datetime) -> list[Usage]:
        """LLM calls made in ``[since, until)``, oldest first."""
        c = llm_usage.c
        query = sa.select(llm_usage).where(c.at >= since, c.at < until).order_by(c.at, c.id)
        async with self.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Usage(
                r["at"],
                r["model"],
                r["purpose"],
                int(r["input_tokens"]),
                int(r["output_tokens"]),
                float(r["cost_usd"]),
            )
            for r in rows
        ]


def _canned(row: Any) -> CannedReply:
    return CannedReply(
        int(row["id"]),
        row["shortcut"],
        row["title"],
        row["body"],
        row["updated_by"],
        row["updated_at"],
    )


def _escape_like(text: str) -> str:
    """Escape ``%``, ``_`` and the backslash for a ``LIKE`` with a backslash escape."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
