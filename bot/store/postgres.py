"""Server databases (PostgreSQL with ``asyncpg``): the asyncio runner and coalesced lookups.

With an async driver the store's batch logic (sync Core) runs through SQLAlchemy's asyncio
extension (:class:`AsyncRunner`). Several processes share one server database, and hundreds of
turns ask the same kind of per-session question at once: :class:`BatchedLookup` serves them
with one query per batch of keys (``= ANY($1)`` on a :data:`KEYS_ARRAY` parameter).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.envelope import SessionKey

_T = TypeVar("_T")
_V = TypeVar("_V")

KEYS_ARRAY: Final = postgresql.ARRAY(sa.String)
"""The type of a ``b_keys`` parameter: ``= ANY($1)`` keeps one SQL text (one prepared statement)
whatever the number of keys, where an expanded ``IN`` list makes one per length."""

CONVERSATION_READ_BATCH: Final = 500
"""Most sessions one coalesced lookup asks for."""


class AsyncRunner:
    """Sync Core through the asyncio extension (asyncpg): ``AsyncConnection.run_sync``.

    ``dedicated`` keeps one connection (the writer's); otherwise each call takes one from the
    engine's pool.
    """

    def __init__(self, engine: AsyncEngine, *, dedicated: bool) -> None:
        self._engine = engine
        self._dedicated = dedicated
        self._conn: AsyncConnection | None = None

    async def run(self, fn: Callable[[sa.Connection], _T]) -> _T:
        """``fn(conn)`` through ``run_sync`` (a new connection after a closed one)."""
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
        """Close the dedicated connection (the engine's pool stays with its owner)."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class BatchedLookup(Generic[_V]):
    """Per-session lookups made concurrently, served by one query (server databases).

    Every turn asks for its session's mode, every send whether its session has outbox entries:
    hundreds at once under load. Lookups queue here; one task runs a query for up to
    ``CONVERSATION_READ_BATCH`` queued sessions at a time (``= ANY($1)``), and lookups made
    while it runs form the next query. A failed query fails the lookups it served.

    Args:
        read: runs ``fetch`` on a reader connection (the store's ``_read``).
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
