"""The SQL :class:`~bot.store.base.Store`: SQLite by default, PostgreSQL in production.

SQLAlchemy 2 Core. The schema uses portable types only (``JSON`` becomes ``JSONB`` on PostgreSQL)
and the SQL is plain: no SQLite-only statements on the shared path.

Writes are group-committed: every write call becomes a request on one in-memory queue served by a
single writer task. The writer takes whatever is queued, runs it as one transaction (grouped into
``executemany`` statements), commits, and only then resolves each caller's future, so an awaited
write is committed. When the writer is idle a request starts a batch at once (writes that queue
meanwhile form the next batch); under load (the last batch held ``LOADED_BATCH`` requests or
more) batches start at most every ``store_batch_ms`` milliseconds, to commit more per
transaction. A failing batch is rolled back and its requests are retried one by one, so only the
bad request fails.

How statements reach the database depends on the driver; the batch logic is one piece of sync
Core either way. With PostgreSQL (``asyncpg``) or any other async driver it runs through the
asyncio extension (``AsyncConnection.run_sync``). With SQLite it runs on a ``pysqlite`` connection
on the event loop's thread (see :class:`_InlineRunner` for why), reads on a second connection, and
WAL checkpoints, the only step that waits for the disk, on a thread of their own. Measured here:
``aiosqlite`` through SQLAlchemy's adapter costs about four thread hops per statement (0.5-0.8 ms
each statement), which caps group commit far below 10,000 writes/s. The ``AsyncEngine``
(``aiosqlite``) still creates the schema and serves other components (local tickets).

Sequence numbers are assigned by the writer from a bounded per-session counter cache (reloaded
from ``max(seq)`` on a miss). That assumes one writing process per database, as in the embedded
setup; a second writer on the same session makes a batch hit the primary key, and the request is
retried once with reloaded counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, Protocol, TypeVar

import pydantic_core
import sqlalchemy as sa
from cachetools import LRUCache, TTLCache
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bot.config import Settings
from bot.envelope import (
    Citation,
    InboundMessage,
    OutboundMessage,
    Participant,
    SessionKey,
    channel_of,
    utcnow,
)
from bot.errors import BackendUnavailable, Conflict, NotFound, PayloadInvalid, SwitchboardError
from bot.store.base import (
    AgentAccount,
    Conversation,
    NewMessage,
    OutboxEntry,
    OutboxStatus,
    Role,
    SessionMode,
    StoredMessage,
)

logger = logging.getLogger(__name__)

MAX_BATCH: Final = 1000
"""Most requests one group commit takes (bounds SQL parameter counts and latency)."""

LOADED_BATCH: Final = 16
"""A batch of this many requests means load: the next one waits out ``store_batch_ms`` to grow.

Smaller batches mean the writer is mostly idle, and the next request commits at once.
"""

SESSION_CACHE_SIZE: Final = 50_000
"""Sessions whose last ``seq`` is kept in memory; the least recently written are evicted."""

CHECKPOINT_INTERVAL_S: Final = 1.0
"""SQLite: how often (while writing) a passive WAL checkpoint runs on its own thread."""

SQLITE_BUSY_TIMEOUT_MS: Final = 5000

SERVER_POOL_SIZE: Final = 16
"""Connections a process keeps to a database server (PostgreSQL): no overflow beyond it.

Readers wait for a free connection rather than open a short-lived one: with SQLAlchemy's
default (5 kept + 10 overflow) a few hundred concurrent turns opened and closed a connection
per read (a TCP and TLS negotiation each), which cost more CPU than the queries."""
"""How long a SQLite connection waits for another writer's lock before failing."""


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (UTC).

    PostgreSQL uses ``timestamptz``. SQLite has no time type: values are stored as fixed-width
    ISO 8601 text in UTC (``2026-01-02 03:04:05.000006``, which sorts in time order) and parsed
    with ``datetime.fromisoformat``, about ten times faster than SQLAlchemy's regex-based
    SQLite ``DATETIME``. Binding a naive datetime raises ``ValueError``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        """ISO text on SQLite, ``timestamptz`` elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(26))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        """Convert to UTC (fixed-width ISO text on SQLite)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return timezone-aware UTC."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JsonType: Final = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
"""A JSON column: ``JSON`` text on SQLite, ``JSONB`` on PostgreSQL; Python None is SQL NULL."""

metadata = sa.MetaData()

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
    sa.Index("ix_audit_session_key", "session_key", "id"),
)
"""Who did what to which session, and when."""

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


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit row.

    Attributes:
        id: increasing row id.
        at: when (UTC).
        actor: who (``agent:NAME``, ``bot``, ``system``...).
        action: what (``handoff.claim``...).
        session_key: which session, if any.
        detail: JSON details.
    """

    id: int
    at: datetime
    actor: str
    action: str
    session_key: SessionKey | None
    detail: dict[str, Any]


def json_dumps(value: Any) -> str:
    """Serialize a JSON column value with pydantic-core.

    Pydantic models (envelopes, citations) are serialized directly, so hot-path rows skip
    ``model_dump`` (4 µs instead of 17 µs per envelope).

    Raises:
        pydantic_core.PydanticSerializationError: (a ValueError) for a value JSON cannot hold.
    """
    return pydantic_core.to_json(value).decode()


def _sqlite_busy(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" (``SQLITE_BUSY`` and its extended codes)."""
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    return isinstance(exc, OperationalError) and code is not None and code & 0xFF == 5


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> AsyncEngine:
    """Create an async engine; SQLite connections get WAL, ``synchronous=NORMAL``, a busy timeout.

    Args:
        url: a SQLAlchemy async URL (``sqlite+aiosqlite:///PATH``, ``postgresql+asyncpg://...``).

    Returns:
        The engine (callers dispose of it).
    """
    if sa.make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(url, json_serializer=json_dumps)
    else:
        engine = create_async_engine(
            url,
            json_serializer=json_dumps,
            pool_size=SERVER_POOL_SIZE,
            max_overflow=0,
            pool_timeout=60.0,
        )
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sync_sqlite_engine(url: str) -> sa.Engine:
    """A ``pysqlite`` engine on the same file as an ``sqlite+aiosqlite`` URL."""
    sync_url = sa.make_url(url).set(drivername="sqlite+pysqlite")
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool, json_serializer=json_dumps)
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


_T = TypeVar("_T")
_V = TypeVar("_V")


class _Runner(Protocol):
    """Runs a sync Core function on a connection; one await per call."""

    async def run(self, fn: Callable[[sa.Connection], _T]) -> _T: ...

    async def close(self) -> None: ...


class _InlineRunner:
    """One ``pysqlite`` connection used on the event loop's own thread (SQLite).

    A WAL commit with ``synchronous=NORMAL`` does not wait for the disk, so a batch costs only
    its CPU time. Handing it to a thread costs more than the work itself: a thread hop per call,
    and under load the thread waits for the GIL up to the interpreter's 5 ms switch interval
    each time SQLite releases it. Checkpoints, which do wait for the disk, run on a thread
    (see :class:`_ThreadRunner`).

    Args:
        engine: a ``pysqlite`` engine; this runner disposes of it.
        setup: statements run on each new connection (e.g. connection-level pragmas).
    """

    def __init__(self, engine: sa.Engine, *, setup: Sequence[str] = ()) -> None:
        self._engine = engine
        self._setup = setup
        self._conn: sa.Connection | None = None

    def _call(self, fn: Callable[[sa.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._conn = self._engine.connect()
            for statement in self._setup:
                conn.exec_driver_sql(statement)
        return fn(conn)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()

    async def run(self, fn: Callable[[sa.Connection], _T]) -> _T:
        return self._call(fn)

    async def close(self) -> None:
        self._close()


class _ThreadRunner(_InlineRunner):
    """One ``pysqlite`` connection owned by one thread: for calls that wait for the disk."""

    def __init__(self, engine: sa.Engine, name: str, *, setup: Sequence[str] = ()) -> None:
        super().__init__(engine, setup=setup)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[[sa.Connection], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)


async def _run_patiently(runner: _Runner, fn: Callable[[sa.Connection], _T]) -> _T:
    """``runner.run(fn)``, retried while SQLite reports its write lock busy.

    SQLite connections on the loop's thread use ``busy_timeout=0`` and wait here instead of in
    SQLite's busy handler, which would block the loop, and with it an in-process lock holder
    (the ``aiosqlite`` ticket backend) that needs the loop to commit: a deadlock until timeout.

    Raises:
        sqlalchemy.exc.OperationalError: still busy after ``SQLITE_BUSY_TIMEOUT_MS``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            return await runner.run(fn)
        except OperationalError as exc:
            if not _sqlite_busy(exc) or loop.time() >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


class _AsyncRunner:
    """Sync Core through the asyncio extension (asyncpg): ``AsyncConnection.run_sync``.

    ``dedicated`` keeps one connection (the writer's); otherwise each call takes one from the
    engine's pool.
    """

    def __init__(self, engine: AsyncEngine, *, dedicated: bool) -> None:
        self._engine = engine
        self._dedicated = dedicated
        self._conn: AsyncConnection | None = None

    async def run(self, fn: Callable[[sa.Connection], _T]) -> _T:
        if not self._dedicated:
            async with self._engine.connect() as pooled:
                return await pooled.run_sync(fn)
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                await conn.close()
            conn = self._conn = await self._engine.connect()
        return await conn.run_sync(fn)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class _BatchedLookup(Generic[_V]):
    """Per-session lookups made concurrently, served by one query (server databases).

    Every turn asks for its session's mode, every send whether its session has outbox entries:
    hundreds at once under load. Lookups queue here; one task runs a query for up to
    ``CONVERSATION_READ_BATCH`` queued sessions at a time (``= ANY($1)``), and lookups made
    while it runs form the next query. A failed query fails the lookups it served.

    Args:
        read: runs ``fetch`` on a reader connection (:meth:`SqlStore._read`).
        fetch: ``(keys, conn) -> {key: value}`` for the keys that have a value.
        missing: the value of a key the query did not return.
        name: the serving task's name.
    """

    def __init__(
        self,
        read: Callable[[Callable[[sa.Connection], dict[SessionKey, _V]]], Awaitable[Any]],
        fetch: Callable[[list[SessionKey], sa.Connection], dict[SessionKey, _V]],
        missing: _V,
        name: str,
    ) -> None:
        self._read = read
        self._fetch = fetch
        self._missing = missing
        self._name = name
        self._waiting: dict[SessionKey, list[asyncio.Future[_V]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: SessionKey) -> _V:
        """The value of ``key`` (raises what the query raised, e.g. ``BackendUnavailable``)."""
        fut: asyncio.Future[_V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(fut)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._serve(), name=self._name)
        return await fut

    async def _serve(self) -> None:
        while self._waiting:
            keys = list(itertools.islice(self._waiting, CONVERSATION_READ_BATCH))
            batch = {k: self._waiting.pop(k) for k in keys}
            try:
                found: dict[SessionKey, _V] = await self._read(
                    functools.partial(self._fetch, keys)
                )
            except Exception as exc:  # every waiter gets the error
                for futs in batch.values():
                    for f in futs:
                        if not f.done():
                            f.set_exception(exc)
                continue
            for key, futs in batch.items():
                value = found.get(key, self._missing)
                for f in futs:
                    if not f.done():
                        f.set_result(value)


# --- writer requests ----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Request:
    fut: asyncio.Future[Any]

    def sessions(self) -> Iterable[SessionKey]:
        return ()


@dataclass(slots=True, eq=False)
class _Inbound(_Request):
    msg: InboundMessage

    def sessions(self) -> Iterable[SessionKey]:
        return (self.msg.session_key,)


@dataclass(slots=True, eq=False)
class _Append(_Request):
    items: Sequence[NewMessage]

    def sessions(self) -> Iterable[SessionKey]:
        return {m.session_key for m in self.items}


@dataclass(slots=True, eq=False)
class _MarkHandled(_Request):
    session_key: SessionKey
    event_ids: Sequence[str]


@dataclass(slots=True, eq=False)
class _Audit(_Request):
    row: dict[str, Any]


_CallFn = Callable[[sa.Connection, datetime], Any]


@dataclass(slots=True, eq=False)
class _Call(_Request):
    """A serial operation; it may raise a SwitchboardError only before it writes anything."""

    fn: _CallFn
    conversation: SessionKey | None = None  # whose conversation row it may change


@dataclass(slots=True)
class _SessionState:
    last_seq: int
    has_conversation: bool


@dataclass(slots=True)
class _BatchResult:
    outcomes: list[Any]
    sessions: dict[SessionKey, _SessionState] = field(default_factory=dict)
    dedupe_keys: list[tuple[str, str, str]] = field(default_factory=list)
    written_at: datetime | None = None
    customers: dict[SessionKey, Participant] = field(default_factory=dict)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _caller_error(exc: BaseException) -> BaseException:
    """The error a caller sees for a request that failed on its own."""
    if isinstance(exc, SwitchboardError):
        return exc
    err: SwitchboardError
    cause = exc.orig if isinstance(exc, StatementError) else exc
    if isinstance(exc, IntegrityError):
        err = Conflict(f"store constraint violated: {cause}")
    elif isinstance(exc, DBAPIError):
        err = BackendUnavailable(f"database write failed: {cause}")
    elif isinstance(cause, TypeError | ValueError):
        err = PayloadInvalid(f"cannot store value: {cause}")
    else:
        err = BackendUnavailable(f"store write failed: {exc!r}")
    err.__cause__ = exc
    return err


def _citations(raw: Any) -> tuple[Citation, ...]:
    return tuple(Citation.model_validate(c) for c in raw or ())


def _stored(row: sa.Row[*tuple[Any, ...]]) -> StoredMessage:
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
        created_at=_utc(row.created_at),
    )


def _outbox_entry(row: sa.Row[*tuple[Any, ...]]) -> OutboxEntry:
    return OutboxEntry(
        id=int(row.id),
        session_key=SessionKey(row.session_key),
        channel=row.channel,
        message=OutboundMessage.model_validate(row.message),
        attempts=row.attempts,
        next_attempt_at=_utc(row.next_attempt_at),
        created_at=_utc(row.created_at),
        last_error=row.last_error,
        claim=row.claim,
    )


def _conversation(row: sa.Row[*tuple[Any, ...]]) -> Conversation:
    return Conversation(
        session_key=SessionKey(row.session_key),
        channel=row.channel,
        account=row.account,
        customer=Participant.model_validate(row.customer),
        mode=SessionMode(row.mode),
        assigned_agent=row.assigned_agent,
        ticket_id=row.ticket_id,
        escalation_reason=row.escalation_reason,
        queued_at=_utc(row.queued_at) if row.queued_at is not None else None,
        last_seq=row.last_seq,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        meta=dict(row.meta or {}),
    )


_MESSAGE_COLUMNS: Final = [c for c in messages.c if c.name not in ("inbound", "handled")]

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
_INSERT_AUDIT: Final = audit.insert()
# Hot reads, built once (building a select costs more than running it on SQLite).
_SELECT_MESSAGES_ALL: Final = (
    sa.select(*_MESSAGE_COLUMNS)
    .where(
        messages.c.session_key == sa.bindparam("b_session_key"),
        messages.c.seq > sa.bindparam("b_after"),
    )
    .order_by(messages.c.seq)
    .limit(sa.bindparam("b_limit"))
)
_SELECT_MESSAGES: Final = _SELECT_MESSAGES_ALL.where(messages.c.internal.is_(False))
_SELECT_RECENT: Final = (
    sa.select(*_MESSAGE_COLUMNS)
    .where(
        messages.c.session_key == sa.bindparam("b_session_key"),
        messages.c.internal.is_(False),
    )
    .order_by(messages.c.seq.desc())
    .limit(sa.bindparam("b_limit"))
)
_SELECT_CONVERSATION: Final = sa.select(conversations).where(
    conversations.c.session_key == sa.bindparam("b_session_key")
)
_KEYS_ARRAY: Final = postgresql.ARRAY(sa.String)
_SELECT_CONVERSATIONS_ANY: Final = sa.select(conversations).where(
    conversations.c.session_key == sa.any_(sa.bindparam("b_keys", type_=_KEYS_ARRAY))
)
"""Conversation rows of many sessions on PostgreSQL: ``= ANY($1)`` keeps one SQL text (one
prepared statement) whatever the number of keys, where an expanded ``IN`` list makes one per
length."""
_LOCK_CONVERSATIONS_ANY: Final = (
    sa.select(conversations.c.session_key, conversations.c.last_seq)
    .where(conversations.c.session_key == sa.any_(sa.bindparam("b_keys", type_=_KEYS_ARRAY)))
    .order_by(conversations.c.session_key)
    .with_for_update()
)
"""Lock the conversation rows of a write batch, in key order (writers never deadlock), and read
their ``last_seq`` under the lock."""
_MAX_SEQ_ANY: Final = (
    sa.select(messages.c.session_key, sa.func.max(messages.c.seq))
    .where(messages.c.session_key == sa.any_(sa.bindparam("b_keys", type_=_KEYS_ARRAY)))
    .group_by(messages.c.session_key)
)
CONVERSATION_READ_BATCH: Final = 500
_OUTBOX_PENDING_ANY: Final = (
    sa.select(outbox.c.session_key)
    .distinct()
    .where(outbox.c.session_key == sa.any_(sa.bindparam("b_keys", type_=_KEYS_ARRAY)))
)
"""Which of many sessions have outbox entries (server databases, one prepared statement)."""
"""Most sessions one coalesced conversation read asks for (server databases)."""


class _SqliteQuery:
    """A prebuilt select run straight through ``pysqlite`` (SQLite reads on the hot path).

    The SQL is the statement above compiled by SQLAlchemy for SQLite; only the execution skips
    SQLAlchemy's result machinery, which costs three times the query itself here (170 µs
    against 57 µs for ten messages). Rows come back raw: the converters below read the SQLite
    storage formats of :class:`UtcDateTime` (ISO text) and :data:`JsonType` (JSON text).
    """

    def __init__(self, stmt: sa.Select[Any]) -> None:
        compiled = stmt.compile(dialect=sqlite_dialect.dialect())
        self.sql = str(compiled)
        self._order = tuple(compiled.positiontup or ())
        self._defaults = dict(compiled.params)

    def rows(self, conn: sa.Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute with ``params`` (by bind name) and fetch every row."""
        values = {**self._defaults, **params}
        cursor = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            self.sql, tuple(values[k] for k in self._order)
        )
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


_SQLITE_MESSAGES: Final = _SqliteQuery(_SELECT_MESSAGES)
_SQLITE_MESSAGES_ALL: Final = _SqliteQuery(_SELECT_MESSAGES_ALL)
_SQLITE_RECENT: Final = _SqliteQuery(_SELECT_RECENT)
_SQLITE_CONVERSATION: Final = _SqliteQuery(_SELECT_CONVERSATION)
_SQLITE_OUTBOX_PENDING: Final = _SqliteQuery(
    sa.select(outbox.c.id).where(outbox.c.session_key == sa.bindparam("b_session_key")).limit(1)
)


def _sqlite_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _stored_sqlite(r: tuple[Any, ...]) -> StoredMessage:
    """A raw SQLite row of ``_MESSAGE_COLUMNS`` as a :class:`StoredMessage`."""
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


def _conversation_sqlite(r: tuple[Any, ...]) -> Conversation:
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


class SqlStore:
    """The :class:`~bot.store.base.Store` on SQLAlchemy (SQLite by default, PostgreSQL).

    Args:
        settings: uses ``resolved_database_url``, ``store_batch_ms`` (the group-commit window
            under load, in milliseconds), ``dedupe_ttl_s`` and ``dedupe_max_entries`` (the
            in-memory dedupe cache of ``(channel, account, event_id)`` keys).

    Call :meth:`open` before use and :meth:`close` at shutdown (it flushes queued writes).
    Writes raise :class:`~bot.errors.BackendUnavailable` when the database cannot be written
    or the store is closed, and :class:`~bot.errors.PayloadInvalid` for a value the database
    cannot hold (e.g. text with lone surrogates).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._url = settings.resolved_database_url
        self._engine: AsyncEngine | None = None
        self._writer_runner: _Runner | None = None
        self._reader_runner: _Runner | None = None
        self._checkpointer: _Runner | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._last_checkpoint_at = float("-inf")
        self._writer: asyncio.Task[None] | None = None
        self._pending: list[_Request] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._batch_s = max(0.0, settings.store_batch_ms / 1000.0)
        self._last_batch_at = float("-inf")
        self._last_batch_size = 0
        self._raw_sqlite = False
        self._sessions: LRUCache[SessionKey, _SessionState] = LRUCache(SESSION_CACHE_SIZE)
        # Conversation rows, kept only where this process is the one writer (SQLite) and reads
        # and writes run on the loop's thread, so a cached row is never older than the file.
        self._convs: LRUCache[SessionKey, Conversation] = LRUCache(SESSION_CACHE_SIZE)
        # Server databases: conversation lookups waiting for the next coalesced query.
        self._conv_reads: _BatchedLookup[Conversation | None] = _BatchedLookup(
            self._read, _conversations_by_key, None, "store-conversation-reads"
        )
        # Server databases: outbox_pending lookups waiting for the next coalesced query.
        self._outbox_reads: _BatchedLookup[bool] = _BatchedLookup(
            self._read, _outbox_sessions, False, "store-outbox-reads"
        )
        self._dedupe: TTLCache[tuple[str, str, str], bool] = TTLCache(
            maxsize=max(1, settings.dedupe_max_entries), ttl=settings.dedupe_ttl_s
        )

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The async engine (shared with the local ticket backend).

        Raises:
            RuntimeError: before :meth:`open` or after :meth:`close`.
        """
        if self._engine is None:
            raise RuntimeError("SqlStore is not open")
        return self._engine

    async def open(self) -> None:
        """Create tables if missing and start the group-commit writer.

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be reached.
        """
        if self._engine is not None:
            return
        if not self._settings.database_url:
            self._settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(self._url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        except (OSError, DBAPIError) as exc:
            await engine.dispose()
            raise BackendUnavailable(f"cannot open the store database: {exc}") from exc
        self._engine = engine
        self._raw_sqlite = engine.dialect.name == "sqlite"
        if self._raw_sqlite:
            # The writer leaves checkpoints (which wait for the disk) to the checkpointer thread.
            # Neither waits in SQLite's busy handler: see _run_patiently.
            self._writer_runner = _InlineRunner(
                _sync_sqlite_engine(self._url),
                setup=["PRAGMA wal_autocheckpoint=0", "PRAGMA busy_timeout=0"],
            )
            self._reader_runner = _InlineRunner(
                _sync_sqlite_engine(self._url), setup=["PRAGMA busy_timeout=0"]
            )
            self._checkpointer = _ThreadRunner(_sync_sqlite_engine(self._url), "store-checkpoint")
        else:
            self._writer_runner = _AsyncRunner(engine, dedicated=True)
            self._reader_runner = _AsyncRunner(engine, dedicated=False)
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        logger.info("store.opened", extra={"dialect": engine.dialect.name})

    async def close(self) -> None:
        """Flush pending writes, stop the writer and close connections."""
        if self._engine is None:
            return
        self._closing = True
        self._wake.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            await asyncio.wait({writer})  # never raises; a cancelled writer is a dead one
            if not writer.cancelled() and writer.exception() is not None:
                logger.error("store.writer_died", exc_info=writer.exception())
        pending, self._pending = self._pending, []
        for req in pending:  # only left when the writer died
            self._resolve(req, BackendUnavailable("the store closed before this write"))
        if self._checkpoint_task is not None:
            await asyncio.wait({self._checkpoint_task})
            self._checkpoint_task = None
        for runner in (self._writer_runner, self._reader_runner, self._checkpointer):
            if runner is not None:
                await runner.close()
        self._writer_runner = self._reader_runner = self._checkpointer = None
        await self._engine.dispose()
        self._engine = None
        logger.info("store.closed")

    # --- writes ---------------------------------------------------------------------------------

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
        result: StoredMessage | None = await self._submit(_Inbound(self._future(), msg))
        return result

    async def append(self, messages: Sequence[NewMessage]) -> list[StoredMessage]:
        """Persist bot, agent, system messages and notes, in order; seqs are assigned.

        A message whose ``event_id`` (idempotency key) is already stored for its session is not
        written again; the stored one is returned instead, with ``fresh=False``. Messages of a
        session that has no conversation yet (no customer message) are stored without one.
        """
        if not messages:
            return []
        result: list[StoredMessage] = await self._submit(_Append(self._future(), messages))
        return result

    async def mark_handled(self, session_key: SessionKey, event_ids: Sequence[str]) -> None:
        """Record that turns covering these customer messages finished (group-committed)."""
        if event_ids:
            await self._submit(_MarkHandled(self._future(), session_key, list(event_ids)))

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
            return _conversation(row)

        result: Conversation = await self._submit(_Call(self._future(), run, session_key))
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

        await self._submit(_Call(self._future(), run, session_key))

    async def create_agent(self, account: AgentAccount) -> None:
        """Create a human agent account.

        Raises:
            bot.errors.Conflict: when the name is taken.
        """

        def run(conn: sa.Connection, now: datetime) -> None:
            if conn.scalar(sa.select(agents.c.name).where(agents.c.name == account.name)):
                raise Conflict(f"agent {account.name!r} exists")
            conn.execute(
                agents.insert().values(
                    name=account.name,
                    display_name=account.display_name,
                    password_hash=account.password_hash,
                    active=account.active,
                    created_at=now,
                )
            )

        await self._submit(_Call(self._future(), run))

    async def update_agent(self, account: AgentAccount) -> None:
        """Replace the agent account with the same name (password re-hash, display name, active).

        Raises:
            bot.errors.NotFound: when no agent has that name.
        """

        def run(conn: sa.Connection, now: datetime) -> None:
            result = conn.execute(
                agents.update()
                .where(agents.c.name == account.name)
                .values(
                    display_name=account.display_name,
                    password_hash=account.password_hash,
                    active=account.active,
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"no agent {account.name!r}")

        await self._submit(_Call(self._future(), run))

    async def audit(
        self, actor: str, action: str, session_key: SessionKey | None, detail: dict[str, Any]
    ) -> None:
        """Append an audit record (who did what to which session, and when)."""
        row = {"actor": actor, "action": action, "session_key": session_key, "detail": detail}
        await self._submit(_Audit(self._future(), row))

    # --- reads ----------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sa.Connection], _T]) -> _T:
        """Run a read on the reader connection (not the writer's)."""
        if self._reader_runner is None:
            raise BackendUnavailable("the store is closed")
        return await _run_patiently(self._reader_runner, fn)

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
                lambda conn: [_stored_sqlite(r) for r in query.rows(conn, params)]
            )
        stmt = _SELECT_MESSAGES_ALL if include_internal else _SELECT_MESSAGES
        return await self._read(lambda conn: [_stored(r) for r in conn.execute(stmt, params)])

    async def recent(self, session_key: SessionKey, limit: int) -> list[StoredMessage]:
        """The ``limit`` newest messages of a session (notes excluded), oldest first."""
        params = {"b_session_key": session_key, "b_limit": limit}
        if self._raw_sqlite:
            rows = await self._read(
                lambda conn: [_stored_sqlite(r) for r in _SQLITE_RECENT.rows(conn, params)]
            )
        else:
            rows = await self._read(
                lambda conn: [_stored(r) for r in conn.execute(_SELECT_RECENT, params)]
            )
        rows.reverse()
        return rows

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
                conv = _conversation_sqlite(rows[0]) if rows else None
                if conv is not None:
                    self._convs[session_key] = conv  # same step as the read: never stale
                return conv
            row = conn.execute(_SELECT_CONVERSATION, params).one_or_none()
            return _conversation(row) if row is not None else None

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
        return await self._read(lambda conn: [_conversation(r) for r in conn.execute(stmt)])

    async def agent(self, name: str) -> AgentAccount | None:
        """An agent account by login name."""
        stmt = sa.select(agents).where(agents.c.name == name)
        row = await self._read(lambda conn: conn.execute(stmt).one_or_none())
        if row is None:
            return None
        return AgentAccount(
            name=row.name,
            display_name=row.display_name,
            password_hash=row.password_hash,
            active=bool(row.active),
        )

    async def audit_records(
        self, *, session_key: SessionKey | None = None, limit: int = 200
    ) -> list[AuditRecord]:
        """Audit rows, newest first, optionally of one session (not part of ``Store``)."""
        a = audit.c
        stmt = sa.select(audit).order_by(a.id.desc()).limit(limit)
        if session_key is not None:
            stmt = stmt.where(a.session_key == session_key)
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [
            AuditRecord(
                id=r.id,
                at=_utc(r.at),
                actor=r.actor,
                action=r.action,
                session_key=SessionKey(r.session_key) if r.session_key is not None else None,
                detail=dict(r.detail),
            )
            for r in rows
        ]

    # --- outbox (messages a platform did not take) -----------------------------------------------
    # Writes are rare (only failed sends) and run as serial calls on the group-commit writer, so
    # SQLite keeps one writing connection. Claims are compare-and-set: one UPDATE ... RETURNING
    # of due session heads, whose subquery takes ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
    # two processes never claim one entry (a row another claim holds is skipped; a row it
    # claimed meanwhile fails the ``next_attempt_at <= now`` recheck).

    async def outbox_put(
        self, message: OutboundMessage, *, error: str | None, next_attempt_at: datetime
    ) -> OutboxEntry:
        """Put an undelivered message in the outbox, behind its session's earlier entries.

        Args:
            message: the envelope to send again (its ``session_key`` names the session).
            error: why the last send failed (``repr``), None when queued behind others:
                then the session's earlier entries that are not claimed become due now (the
                hub answers a session whose customer just reached it: its platform is likely
                back, and the customer should not wait out a long backoff).
            next_attempt_at: when to try it first (UTC).

        Returns:
            The entry as stored (``attempts`` 0, ``created_at`` now).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """
        row: dict[str, Any] = {
            "session_key": message.session_key,
            "channel": channel_of(message.session_key),
            "message": message,
            "attempts": 0,
            "next_attempt_at": next_attempt_at,
            "last_error": error,
            "claim": None,
        }

        def run(conn: sa.Connection, now: datetime) -> OutboxEntry:
            if error is None:  # queued behind: the session's earlier entries are due now
                conn.execute(
                    outbox.update()
                    .where(
                        outbox.c.session_key == message.session_key,
                        outbox.c.claim.is_(None),
                        outbox.c.next_attempt_at > now,
                    )
                    .values(next_attempt_at=now)
                )
            result = conn.execute(outbox.insert().values(**row, created_at=now))
            (new_id,) = result.inserted_primary_key or (None,)
            assert new_id is not None
            return OutboxEntry(
                id=int(new_id),
                session_key=message.session_key,
                channel=row["channel"],
                message=message,
                attempts=0,
                next_attempt_at=next_attempt_at,
                created_at=now,
                last_error=error,
            )

        entry: OutboxEntry = await self._submit(_Call(self._future(), run))
        return entry

    async def outbox_claim(self, *, limit: int, lease_s: float) -> list[OutboxEntry]:
        """Claim due entries to send: at most one per session, its oldest (FIFO per session).

        A claimed entry is leased for ``lease_s`` seconds: ``next_attempt_at`` moves to the
        lease's end and ``claim`` holds a fresh token, so no other process claims it meanwhile,
        and an entry whose claimer died is due again when the lease ends. A later entry of a
        session is never claimed while an earlier one exists.

        Args:
            limit: most entries to claim.
            lease_s: the lease, in seconds (longer than one send may take).

        Returns:
            The claimed entries, oldest first.

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """
        token = secrets.token_hex(8)

        def run(conn: sa.Connection, now: datetime) -> list[OutboxEntry]:
            o, p = outbox.alias("o"), outbox.alias("p")
            earlier = sa.exists().where(p.c.session_key == o.c.session_key, p.c.id < o.c.id)
            due = (
                sa.select(o.c.id)
                .where(o.c.next_attempt_at <= now, ~earlier)
                .order_by(o.c.next_attempt_at, o.c.id)
                .limit(limit)
            )
            if not self._raw_sqlite:
                due = due.with_for_update(of=o, skip_locked=True)
            stmt = (
                outbox.update()
                .where(outbox.c.id.in_(due), outbox.c.next_attempt_at <= now)
                .values(next_attempt_at=now + timedelta(seconds=lease_s), claim=token)
                .returning(*outbox.c)
            )
            return sorted((_outbox_entry(r) for r in conn.execute(stmt)), key=lambda e: e.id)

        if limit <= 0:
            return []
        entries: list[OutboxEntry] = await self._submit(_Call(self._future(), run))
        return entries

    async def outbox_done(self, entry: OutboxEntry) -> bool:
        """Delete an entry (sent, or given up).

        Returns:
            False when it was claimed and the claim was lost (the lease ended and another
            process took it), or it was gone already.
        """

        def run(conn: sa.Connection, now: datetime) -> bool:
            stmt = outbox.delete().where(outbox.c.id == entry.id, outbox.c.claim == entry.claim)
            return bool(conn.execute(stmt).rowcount == 1)

        done: bool = await self._submit(_Call(self._future(), run))
        return done

    async def outbox_reschedule(
        self, entry: OutboxEntry, *, error: str, next_attempt_at: datetime
    ) -> bool:
        """Release a claimed entry after a failed send: one more attempt, due at the given time.

        Returns:
            False when the claim was lost (its lease ended and another process took it).
        """

        def run(conn: sa.Connection, now: datetime) -> bool:
            stmt = (
                outbox.update()
                .where(outbox.c.id == entry.id, outbox.c.claim == entry.claim)
                .values(
                    attempts=outbox.c.attempts + 1,
                    next_attempt_at=next_attempt_at,
                    last_error=error,
                    claim=None,
                )
            )
            return bool(conn.execute(stmt).rowcount == 1)

        done: bool = await self._submit(_Call(self._future(), run))
        return done

    async def outbox_pending(self, session_key: SessionKey) -> bool:
        """True when the session has entries in the outbox (asked before each send).

        SQLite: one indexed lookup on the reader connection (about 10 µs). Server databases:
        concurrent lookups share one ``= ANY($1)`` query, as conversation reads do.
        """
        if self._raw_sqlite:
            params = {"b_session_key": session_key}
            return await self._read(lambda conn: bool(_SQLITE_OUTBOX_PENDING.rows(conn, params)))
        return await self._outbox_reads.get(session_key)

    async def outbox_status(self) -> OutboxStatus:
        """How many entries wait, and when the earliest is due (claimed ones: lease end)."""
        stmt = sa.select(sa.func.count(), sa.func.min(outbox.c.next_attempt_at))
        depth, first = await self._read(lambda conn: conn.execute(stmt).one())
        return OutboxStatus(int(depth or 0), _utc(first) if first is not None else None)

    async def outbox(
        self, session_key: SessionKey | None = None, *, limit: int = 200
    ) -> list[OutboxEntry]:
        """Entries waiting, oldest first, of one session or of all."""
        stmt = sa.select(outbox).order_by(outbox.c.id).limit(limit)
        if session_key is not None:
            stmt = stmt.where(outbox.c.session_key == session_key)
        return await self._read(lambda conn: [_outbox_entry(r) for r in conn.execute(stmt)])

    # --- the writer task ------------------------------------------------------------------------

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, req: _Request) -> Any:
        if self._closing or self._writer is None:
            raise BackendUnavailable("the store is closed")
        self._pending.append(req)
        self._wake.set()
        return await req.fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # Under load (the last batch was big), wait out the window to commit more at once;
            # otherwise commit now: a lone write should not wait for company.
            if self._last_batch_size >= LOADED_BATCH and not self._closing:
                delay = self._last_batch_at + self._batch_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            self._last_batch_at = loop.time()
            self._last_batch_size = len(batch)
            try:
                await self._commit(batch)
            except Exception as exc:  # task boundary: the writer must survive
                logger.exception("store.writer_failed", extra={"batch_size": len(batch)})
                for req in batch:
                    self._resolve(req, _caller_error(exc))
            self._maybe_checkpoint(loop.time())

    def _maybe_checkpoint(self, now: float) -> None:
        """Start a passive WAL checkpoint on its thread, at most every CHECKPOINT_INTERVAL_S."""
        if self._checkpointer is None or now - self._last_checkpoint_at < CHECKPOINT_INTERVAL_S:
            return
        if self._checkpoint_task is not None and not self._checkpoint_task.done():
            return
        self._last_checkpoint_at = now
        self._checkpoint_task = asyncio.create_task(self._checkpoint(), name="store-checkpoint")

    async def _checkpoint(self) -> None:
        assert self._checkpointer is not None
        try:
            await self._checkpointer.run(
                lambda conn: conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").all()
            )
        except Exception:  # task boundary: the next checkpoint will try again
            logger.warning("store.checkpoint_failed", exc_info=True)

    async def _commit(self, batch: list[_Request]) -> None:
        """Commit ``batch``, optimistically first, then checked, then request by request.

        The first attempt does not look up dedupe and idempotency keys: the unique indexes catch
        a duplicate the in-memory cache missed (after a restart), and the batch is then rerun
        with the lookups. Any other failure splits the batch, so only the bad request fails.
        """
        error = await self._try(batch, checked=False)
        if isinstance(error, IntegrityError):
            for req in batch:
                self._forget(req)  # another writer may have taken seqs: reload them
            error = await self._try(batch, checked=True)
        if error is None:
            return
        if len(batch) > 1:
            logger.warning("store.batch_failed", exc_info=error, extra={"batch_size": len(batch)})
            for req in batch:
                error = await self._try([req], checked=True)
                if error is not None:
                    self._fail(req, error)
        else:
            self._fail(batch[0], error)

    def _fail(self, req: _Request, error: Exception) -> None:
        self._forget(req)
        logger.warning(
            "store.write_failed",
            exc_info=error,
            extra={"session_key": next(iter(req.sessions()), None)},
        )
        self._resolve(req, _caller_error(error))

    async def _try(self, batch: list[_Request], *, checked: bool) -> Exception | None:
        """Run ``batch`` as one transaction; resolve its futures, or return the error."""
        assert self._writer_runner is not None
        run = functools.partial(self._transaction, batch, checked)
        try:
            result = await _run_patiently(self._writer_runner, run)
        except Exception as exc:
            return exc
        for key, state in result.sessions.items():
            self._sessions[key] = state
            cached = self._convs.get(key)
            if cached is not None and result.written_at is not None:
                self._convs[key] = dataclasses.replace(
                    cached,
                    last_seq=state.last_seq,
                    updated_at=result.written_at,
                    customer=result.customers.get(key, cached.customer),
                )
        for req in batch:
            if isinstance(req, _Call) and req.conversation is not None:
                self._convs.pop(req.conversation, None)
        for dedupe_key in result.dedupe_keys:
            self._dedupe[dedupe_key] = True
        for req, outcome in zip(batch, result.outcomes, strict=True):
            self._resolve(req, outcome)
        return None

    def _forget(self, req: _Request) -> None:
        for key in req.sessions():
            self._sessions.pop(key, None)
            self._convs.pop(key, None)

    @staticmethod
    def _resolve(req: _Request, outcome: Any) -> None:
        if req.fut.done():  # the caller was cancelled; the write stands
            return
        if isinstance(outcome, BaseException):
            req.fut.set_exception(outcome)
        else:
            req.fut.set_result(outcome)

    # --- batch execution (sync Core, on the writer's connection) --------------------------------

    def _transaction(
        self, batch: list[_Request], checked: bool, conn: sa.Connection
    ) -> _BatchResult:
        try:
            result = self._execute(conn, batch, checked=checked)
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:
                logger.warning("store.rollback_failed", exc_info=True)
                conn.invalidate()
            raise
        return result

    def _execute(
        self, conn: sa.Connection, batch: list[_Request], *, checked: bool
    ) -> _BatchResult:
        """Run one batch inside the connection's transaction; the caller commits.

        ``checked`` looks up stored dedupe and idempotency keys first; unchecked, a stored key
        makes the insert fail on its unique index (see :meth:`_commit`).

        Messages first (conversations, then rows), then ``mark_handled`` updates, then serial
        calls (mode changes, meta, agents) in queue order, then audit rows. Requests in one batch
        were all in flight together, so no caller can observe this order.
        """
        now = utcnow()
        result = _BatchResult([None] * len(batch))
        if any(isinstance(r, _Inbound | _Append) for r in batch):
            self._write_messages(conn, batch, now, result, checked=checked)
        handled = [
            {"b_session_key": r.session_key, "b_event_id": event_id}
            for r in batch
            if isinstance(r, _MarkHandled)
            for event_id in r.event_ids
        ]
        if handled:
            if self._raw_sqlite:
                _sqlite_executemany(
                    conn,
                    _SQLITE_MARK_HANDLED,
                    [(h["b_session_key"], h["b_event_id"]) for h in handled],
                )
            else:
                conn.execute(_MARK_HANDLED, handled)
        for i, req in enumerate(batch):
            if isinstance(req, _Call):
                try:
                    result.outcomes[i] = req.fn(conn, now)
                except SwitchboardError as exc:  # raised before the call wrote anything
                    result.outcomes[i] = exc
        audits = [{**r.row, "at": now} for r in batch if isinstance(r, _Audit)]
        if audits:
            conn.execute(_INSERT_AUDIT, audits)
        return result

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
            sa.select(*_MESSAGE_COLUMNS).where(
                m.session_key.in_({p[0] for p in pairs}),
                m.event_id.in_({p[1] for p in pairs}),
            )
        )
        return {
            (r.session_key, r.event_id): _stored(r)
            for r in found
            if (r.session_key, r.event_id) in pairs
        }

    def _session_states(
        self, conn: sa.Connection, keys: set[SessionKey]
    ) -> dict[SessionKey, _SessionState]:
        """Working copies of the sessions' counters; misses are loaded from the database."""
        states: dict[SessionKey, _SessionState] = {}
        missing: list[SessionKey] = []
        m, c = messages.c, conversations.c
        if not self._raw_sqlite:
            # Several processes write one server database (ingress and workers): the cache may be
            # stale. Lock the sessions' conversation rows, in key order so writers never
            # deadlock, then read max(seq) under the lock (READ COMMITTED: a fresh snapshot).
            # A conversation row's last_seq is its session's max(seq) (every write batch updates
            # both); sessions without a row (bot-only histories) read max(seq).
            for key, last_seq in conn.execute(_LOCK_CONVERSATIONS_ANY, {"b_keys": sorted(keys)}):
                states[key] = _SessionState(last_seq, True)
            bare = [k for k in keys if k not in states]
            if bare:
                found = {r[0]: r[1] for r in conn.execute(_MAX_SEQ_ANY, {"b_keys": bare})}
                for key in bare:
                    states[key] = _SessionState(found.get(key) or 0, False)
            return states
        for key in keys:
            cached = self._sessions.get(key)
            if cached is None:
                missing.append(key)
            else:
                states[key] = _SessionState(cached.last_seq, cached.has_conversation)
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
                states[key] = _SessionState(seqs.get(key) or 0, key in convs)
        return states

    def _write_messages(
        self,
        conn: sa.Connection,
        batch: list[_Request],
        now: datetime,
        result: _BatchResult,
        *,
        checked: bool,
    ) -> None:
        """Dedupe, assign seqs, and write the batch's messages and their conversations."""
        inbound = [r for r in batch if isinstance(r, _Inbound)]
        appends = [r for r in batch if isinstance(r, _Append)]
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
            if isinstance(req, _Inbound):
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
                    new_convs[sk] = _new_conversation(msg, customer, now)
                rows.append(_inbound_row(msg, state.last_seq, now))
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
            elif isinstance(req, _Append):
                out: list[StoredMessage] = []
                for x in req.items:
                    if x.event_id is not None:
                        earlier = by_key.get((x.session_key, x.event_id))
                        if earlier is not None:
                            out.append(dataclasses.replace(earlier, fresh=False))
                            continue
                    state = states[x.session_key]
                    state.last_seq += 1
                    rows.append(_append_row(x, state.last_seq, now))
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
                _sqlite_executemany(
                    conn,
                    _SQLITE_UPDATE_CONV_SEQ,
                    [(p["b_last_seq"], _sqlite_stamp(now), p["b_session_key"]) for p in seq_only],
                )
            else:
                conn.execute(_UPDATE_CONV_SEQ, seq_only)
        if rows:
            if self._raw_sqlite:
                _sqlite_executemany(conn, _SQLITE_INSERT_MESSAGE, [_sqlite_row(r) for r in rows])
            else:
                conn.execute(_INSERT_MESSAGES, rows)
        result.sessions = states


def _conversations_by_key(
    keys: list[SessionKey], conn: sa.Connection
) -> dict[SessionKey, Conversation | None]:
    rows = conn.execute(_SELECT_CONVERSATIONS_ANY, {"b_keys": keys})
    return {row.session_key: _conversation(row) for row in rows}


def _outbox_sessions(keys: list[SessionKey], conn: sa.Connection) -> dict[SessionKey, bool]:
    return dict.fromkeys(conn.execute(_OUTBOX_PENDING_ANY, {"b_keys": keys}).scalars(), True)


def _new_conversation(msg: InboundMessage, customer: Participant, now: datetime) -> dict[str, Any]:
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


# --- SQLite hot-path writes ------------------------------------------------------------------
# The three statements every message costs, run straight through pysqlite with the values
# converted as the column types would (UtcDateTime, JsonType, Boolean): SQLAlchemy's per-row
# parameter processing cost more than SQLite's own work here. Same connection, same
# transaction; the PostgreSQL path keeps the SQLAlchemy statements above.
_MESSAGE_COLUMN_NAMES: Final = tuple(c.name for c in messages.columns)
_SQLITE_INSERT_MESSAGE: Final = (
    f"INSERT INTO messages ({', '.join(_MESSAGE_COLUMN_NAMES)}) "
    f"VALUES ({', '.join('?' for _ in _MESSAGE_COLUMN_NAMES)})"
)
_SQLITE_UPDATE_CONV_SEQ: Final = (
    "UPDATE conversations SET last_seq = ?, updated_at = ? WHERE session_key = ?"
)
_SQLITE_MARK_HANDLED: Final = (
    "UPDATE messages SET handled = 1 WHERE session_key = ? AND event_id = ? "
    f"AND role = '{Role.CUSTOMER.value}'"
)
_JSON_COLUMNS: Final = frozenset({"citations", "inbound"})
_BOOL_COLUMNS: Final = frozenset({"internal", "handled"})


def _sqlite_stamp(value: datetime) -> str:
    """A timestamp as :class:`UtcDateTime` stores it on SQLite (fixed-width ISO, UTC)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_row(row: dict[str, Any]) -> tuple[Any, ...]:
    """A message row dict as the positional SQLite values of ``_SQLITE_INSERT_MESSAGE``."""
    out: list[Any] = []
    for name in _MESSAGE_COLUMN_NAMES:
        value = row[name]
        if value is None:
            out.append(None)
        elif name in _JSON_COLUMNS:
            out.append(json_dumps(value))
        elif name in _BOOL_COLUMNS:
            out.append(1 if value else 0)
        elif isinstance(value, datetime):
            out.append(_sqlite_stamp(value))
        else:
            out.append(value)
    return tuple(out)


def _sqlite_executemany(conn: sa.Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    """``executemany`` on the pysqlite connection under ``conn`` (inside its transaction).

    Raises:
        sqlalchemy.exc.IntegrityError: a unique index refused a row (as SQLAlchemy would).
        sqlalchemy.exc.OperationalError: SQLite could not run it (e.g. the database is busy).
    """
    import sqlite3

    if not conn.in_transaction():
        conn.begin()  # so the caller's conn.commit() commits what the driver wrote
    driver = conn.connection.driver_connection
    try:
        driver.executemany(sql, params)  # type: ignore[union-attr]
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(sql, params, exc) from exc
    except sqlite3.OperationalError as exc:
        raise OperationalError(sql, params, exc) from exc


def _inbound_row(msg: InboundMessage, seq: int, now: datetime) -> dict[str, Any]:
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


def _append_row(x: NewMessage, seq: int, now: datetime) -> dict[str, Any]:
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
