"""The local ticket backend: tickets in the hub's own database (the embedded default).

Tables ``tickets`` and ``ticket_comments`` live next to the store's tables in the same database
(SQLite by default, PostgreSQL when ``database_url`` says so), created on first use. Ticket ids
are ``T-`` plus the zero-padded row number (``T-000001``). Tickets are rare next to messages, so
each call is its own short transaction on SQLAlchemy's asyncio engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.config import Settings
from bot.envelope import Participant, SessionKey, utcnow
from bot.errors import BackendUnavailable, ConfigError, NotFound, PayloadInvalid
from bot.store.base import Store
from bot.store.sql import JsonType, UtcDateTime, make_engine
from bot.tools import Ticket

logger = logging.getLogger(__name__)

STATUSES: Final = ("open", "pending", "solved", "closed")
"""Valid ticket statuses."""

PRIORITIES: Final = ("low", "normal", "high", "urgent")
"""Valid ticket priorities."""

SUBJECT_MAX_CHARS: Final = 255
"""Longer subjects are cut (with an ellipsis) rather than refused."""

_ID = re.compile(r"T-(\d{1,18})")

metadata = sa.MetaData()

tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("num", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject", sa.String, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("requester_id", sa.String, nullable=False),
    sa.Column("requester_channel", sa.String, nullable=False),
    sa.Column("requester", JsonType, nullable=False),
    sa.Column("session_key", sa.String),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_tickets_requester", "requester_channel", "requester_id", "num"),
)
"""One row per ticket; ``num`` gives the id ``T-{num:06d}``."""

ticket_comments = sa.Table(
    "ticket_comments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ticket_num", sa.Integer, sa.ForeignKey("tickets.num"), nullable=False),
    sa.Column("author", sa.String, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_ticket_comments_ticket", "ticket_num", "id"),
)
"""Comments, oldest first by ``id``."""


def format_ticket_id(num: int) -> str:
    """``T-`` and the row number padded to six digits: ``T-000042``."""
    return f"T-{num:06d}"


def parse_ticket_id(ticket_id: str) -> int | None:
    """The row number of a local ticket id, or None when it is not one (``T-000042`` → 42)."""
    match = _ID.fullmatch(ticket_id.strip())
    return int(match.group(1)) if match else None


def check_choice(value: str, allowed: Sequence[str], name: str) -> str:
    """``value`` when it is one of ``allowed``.

    Raises:
        bot.errors.PayloadInvalid: naming ``name`` otherwise.
    """
    if value not in allowed:
        raise PayloadInvalid(
            f"{name} must be one of {', '.join(allowed)}; got {value!r}", field=name
        )
    return value


def ticket_subject(subject: str) -> str:
    """``subject`` on one line, at most :data:`SUBJECT_MAX_CHARS` characters.

    Runs of whitespace become one space; a longer subject is cut and ends with an ellipsis.

    Raises:
        bot.errors.PayloadInvalid: when nothing but whitespace is left.
    """
    subject = " ".join(subject.split())
    if not subject:
        raise PayloadInvalid("a ticket needs a subject", field="subject")
    if len(subject) > SUBJECT_MAX_CHARS:
        subject = subject[: SUBJECT_MAX_CHARS - 1] + "…"
    return subject


class LocalTicketBackend:
    """:class:`bot.tools.TicketBackend` on the hub's SQL database.

    Args:
        settings: used for ``resolved_database_url`` when no engine is given.
        engine: an open engine to share (the store's); the backend then never disposes it.

    Every method raises :class:`~bot.errors.BackendUnavailable` when the database fails, and
    :class:`~bot.errors.PayloadInvalid` for an unknown status or priority or an empty subject.
    """

    def __init__(self, settings: Settings | None = None, *, engine: AsyncEngine | None = None):
        if settings is None and engine is None:
            raise ConfigError("LocalTicketBackend needs settings or an engine")
        self._settings = settings
        self._engine = engine
        self._owns_engine = engine is None
        self._ready = False
        self._lock = asyncio.Lock()

    @classmethod
    def for_store(cls, store: Store, settings: Settings | None = None) -> LocalTicketBackend:
        """A backend sharing the SQL store's engine (same database, its own tables).

        Args:
            store: the hub's store; a :class:`~bot.store.sql.SqlStore` (anything with an
                ``engine`` attribute holding an ``AsyncEngine``).
            settings: fallback when ``store`` is not SQL: the backend opens its own engine.

        Raises:
            bot.errors.ConfigError: when ``store`` has no engine and no settings are given.
        """
        engine = getattr(store, "engine", None)
        if isinstance(engine, AsyncEngine):
            return cls(settings, engine=engine)
        if settings is None:
            raise ConfigError("the local ticket backend needs a SQL store or settings")
        return cls(settings)

    async def open(self) -> None:
        """Create the tables if missing (also done on first use).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be reached.
        """
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            if self._engine is None:
                assert self._settings is not None
                if not self._settings.database_url:
                    self._settings.data_dir.mkdir(parents=True, exist_ok=True)
                self._engine = make_engine(self._settings.resolved_database_url)
            try:
                async with self._engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
            except (OSError, DBAPIError) as exc:
                raise BackendUnavailable(f"cannot open the ticket tables: {exc}") from exc
            self._ready = True

    async def close(self) -> None:
        """Dispose of the engine when this backend opened it."""
        if self._owns_engine and self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        self._ready = False

    async def create(
        self,
        *,
        subject: str,
        description: str,
        requester: Participant,
        channel: str,
        session_key: SessionKey | None,
        priority: str = "normal",
    ) -> Ticket:
        """Open a ticket for ``requester`` with status ``open``.

        Raises:
            bot.errors.PayloadInvalid: for an empty subject or an unknown priority.
        """
        subject = ticket_subject(subject)
        check_choice(priority, PRIORITIES, "priority")
        now = utcnow()
        values = {
            "subject": subject,
            "description": description,
            "status": "open",
            "priority": priority,
            "requester_id": requester.id,
            "requester_channel": channel,
            "requester": requester.model_dump(mode="json"),
            "session_key": session_key,
            "created_at": now,
            "updated_at": now,
        }
        async with self._connect(begin=True) as conn:
            result = await conn.execute(tickets.insert().values(values))
            key = result.inserted_primary_key
            assert key is not None
            num = int(key[0])
        ticket_id = format_ticket_id(num)
        logger.info(
            "tickets.created",
            extra={"ticket_id": ticket_id, "session_key": session_key, "channel": channel},
        )
        return _ticket({"num": num, **values}, [])

    async def get(self, ticket_id: str) -> Ticket | None:
        """A ticket by id with its comments; None for an unknown or malformed id.

        No authorization here: callers check ``requester_id``.
        """
        num = parse_ticket_id(ticket_id)
        if num is None:
            return None
        async with self._connect(begin=False) as conn:
            found = await _load(conn, [num])
        return found[0] if found else None

    async def list_for(self, requester_id: str, channel: str, limit: int = 20) -> list[Ticket]:
        """The requester's tickets on ``channel``, newest first, at most ``limit``."""
        t = tickets.c
        async with self._connect(begin=False) as conn:
            nums = (
                await conn.execute(
                    sa.select(t.num)
                    .where(t.requester_channel == channel, t.requester_id == requester_id)
                    .order_by(t.num.desc())
                    .limit(limit)
                )
            ).scalars()
            found = await _load(conn, list(nums))
        return found

    async def comment(self, ticket_id: str, author: str, text: str) -> Ticket:
        """Add a comment and return the ticket with it.

        Raises:
            bot.errors.NotFound: when the ticket does not exist.
        """
        num = self._num(ticket_id)
        now = utcnow()
        async with self._connect(begin=True) as conn:
            touched = await conn.execute(
                tickets.update().where(tickets.c.num == num).values(updated_at=now)
            )
            if touched.rowcount == 0:
                raise NotFound(f"no ticket {ticket_id!r}")
            await conn.execute(
                ticket_comments.insert().values(
                    ticket_num=num, author=author, text=text, created_at=now
                )
            )
        return await self._must_get(ticket_id)

    async def set_status(self, ticket_id: str, status: str) -> Ticket:
        """Change a ticket's status (``open``, ``pending``, ``solved`` or ``closed``).

        Raises:
            bot.errors.NotFound: when the ticket does not exist.
            bot.errors.PayloadInvalid: for an unknown status.
        """
        check_choice(status, STATUSES, "status")
        num = self._num(ticket_id)
        async with self._connect(begin=True) as conn:
            result = await conn.execute(
                tickets.update()
                .where(tickets.c.num == num)
                .values(status=status, updated_at=utcnow())
            )
            if result.rowcount == 0:
                raise NotFound(f"no ticket {ticket_id!r}")
        logger.info("tickets.status", extra={"ticket_id": ticket_id, "status": status})
        return await self._must_get(ticket_id)

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _num(ticket_id: str) -> int:
        num = parse_ticket_id(ticket_id)
        if num is None:
            raise NotFound(f"no ticket {ticket_id!r}")
        return num

    async def _must_get(self, ticket_id: str) -> Ticket:
        ticket = await self.get(ticket_id)
        if ticket is None:
            raise NotFound(f"no ticket {ticket_id!r}")
        return ticket

    @contextlib.asynccontextmanager
    async def _connect(self, *, begin: bool) -> AsyncIterator[AsyncConnection]:
        """A connection, in a transaction that commits on exit when ``begin``.

        Raises:
            bot.errors.BackendUnavailable: when the database fails.
        """
        await self.open()
        engine = self._engine
        if engine is None:
            raise BackendUnavailable("the ticket backend is closed")
        try:
            async with engine.begin() if begin else engine.connect() as conn:
                yield conn
        except (OSError, DBAPIError) as exc:
            raise BackendUnavailable(f"ticket database failed: {exc}") from exc


async def _load(conn: AsyncConnection, nums: list[int]) -> list[Ticket]:
    """Tickets by row number with their comments, in the order of ``nums``."""
    if not nums:
        return []
    t, c = tickets.c, ticket_comments.c
    rows = {
        r.num: r._mapping for r in await conn.execute(sa.select(tickets).where(t.num.in_(nums)))
    }
    comments: dict[int, list[tuple[str, str, datetime]]] = {n: [] for n in rows}
    found = await conn.execute(
        sa.select(c.ticket_num, c.author, c.text, c.created_at)
        .where(c.ticket_num.in_(list(rows)))
        .order_by(c.ticket_num, c.id)
    )
    for num, author, text, created_at in found:
        comments[num].append((author, text, created_at))
    return [_ticket(dict(rows[n]), comments[n]) for n in nums if n in rows]


def _ticket(row: dict[str, Any], comments: list[tuple[str, str, datetime]]) -> Ticket:
    return Ticket(
        id=format_ticket_id(row["num"]),
        subject=row["subject"],
        description=row["description"],
        status=row["status"],
        priority=row["priority"],
        requester_id=row["requester_id"],
        requester_channel=row["requester_channel"],
        session_key=row["session_key"],
        comments=tuple(comments),
        created_at=row["created_at"],
    )
