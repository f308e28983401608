"""How the store reaches its database: engines, portable column types, the runner protocol.

The schema uses portable types only (``JSON`` becomes ``JSONB`` on PostgreSQL, timestamps are
ISO text on SQLite and ``timestamptz`` on PostgreSQL), so the same tables and the same SQL serve
both. Plugin packages that keep tables in the hub's database (the local ticket backend) build
them from these types and open their engines with :func:`make_engine`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

import pydantic_core
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS: Final = 5000
"""How long a SQLite connection waits for another writer's lock before failing."""

SERVER_POOL_SIZE: Final = 16
"""Connections a process keeps to a database server (PostgreSQL): no overflow beyond it.

Readers wait for a free connection rather than open a short-lived one: with SQLAlchemy's
default (5 kept + 10 overflow) a few hundred concurrent turns opened and closed a connection
per read (a TCP and TLS negotiation each), which cost more CPU than the queries."""

_T = TypeVar("_T")


def sqlite_stamp(value: datetime) -> str:
    """A timezone-aware timestamp as :class:`UtcDateTime` stores it on SQLite.

    Returns:
        Fixed-width ISO 8601 text in UTC without offset (``2026-01-02 03:04:05.000006``).
    """
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


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
        if dialect.name == "sqlite":
            return sqlite_stamp(value)
        return value.astimezone(UTC)

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


def json_dumps(value: Any) -> str:
    """Serialize a JSON column value with pydantic-core.

    Pydantic models (envelopes, citations) are serialized directly, so hot-path rows skip
    ``model_dump`` (4 µs instead of 17 µs per envelope).

    Raises:
        pydantic_core.PydanticSerializationError: (a ValueError) for a value JSON cannot hold.
    """
    return pydantic_core.to_json(value).decode()


def sqlite_busy(exc: BaseException) -> bool:
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


def sync_sqlite_engine(url: str) -> sa.Engine:
    """A ``pysqlite`` engine on the same file as an ``sqlite+aiosqlite`` URL (same pragmas)."""
    sync_url = sa.make_url(url).set(drivername="sqlite+pysqlite")
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool, json_serializer=json_dumps)
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Runner(Protocol):
    """Runs a sync Core function on a connection; one await per call.

    Implementations: :class:`bot.store.sqlite.InlineRunner` and
    :class:`bot.store.sqlite.ThreadRunner` (``pysqlite``), :class:`bot.store.postgres.AsyncRunner`
    (the asyncio extension, e.g. ``asyncpg``).
    """

    async def run(self, fn: Callable[[sa.Connection], _T]) -> _T:
        """``fn(conn)`` on the runner's connection; raises what ``fn`` raises."""

    async def close(self) -> None:
        """Close the runner's connections."""
