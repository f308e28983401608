"""SQLite execution: ``pysqlite`` connections on the event loop's thread, and raw hot-path SQL.

With SQLite the store's batch logic (sync Core) runs on a ``pysqlite`` connection on the event
loop's thread (see :class:`InlineRunner` for why), reads on a second connection, and WAL
checkpoints, the only step that waits for the disk, on a thread of their own
(:class:`ThreadRunner`). Measured here: ``aiosqlite`` through SQLAlchemy's adapter costs about
four thread hops per statement (0.5-0.8 ms each statement), which caps group commit far below
10,000 writes/s. The ``AsyncEngine`` (``aiosqlite``) still creates the schema and serves other
components (local tickets).

The hottest statements skip SQLAlchemy's per-row processing and run straight through the
driver: :class:`SqliteQuery` for reads, :func:`sqlite_executemany` for writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError, OperationalError

from bot.store.engine import SQLITE_BUSY_TIMEOUT_MS, Runner, sqlite_busy

_T = TypeVar("_T")


class InlineRunner:
    """One ``pysqlite`` connection used on the event loop's own thread (SQLite).

    A WAL commit with ``synchronous=NORMAL`` does not wait for the disk, so a batch costs only
    its CPU time. Handing it to a thread costs more than the work itself: a thread hop per call,
    and under load the thread waits for the GIL up to the interpreter's 5 ms switch interval
    each time SQLite releases it. Checkpoints, which do wait for the disk, run on a thread
    (see :class:`ThreadRunner`).

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
        """``fn(conn)`` now, on this thread (a new connection after a closed one)."""
        return self._call(fn)

    async def close(self) -> None:
        """Close the connection and dispose of the engine."""
        self._close()


class ThreadRunner(InlineRunner):
    """One ``pysqlite`` connection owned by one thread: for calls that wait for the disk."""

    def __init__(self, engine: sa.Engine, name: str, *, setup: Sequence[str] = ()) -> None:
        super().__init__(engine, setup=setup)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[[sa.Connection], _T]) -> _T:
        """``fn(conn)`` on the runner's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    async def close(self) -> None:
        """Close the connection and dispose of the engine (on the thread), then stop it."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)


async def run_patiently(runner: Runner, fn: Callable[[sa.Connection], _T]) -> _T:
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
            if not sqlite_busy(exc) or loop.time() >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


class SqliteQuery:
    """A prebuilt select run straight through ``pysqlite`` (SQLite reads on the hot path).

    The SQL is ``stmt`` compiled by SQLAlchemy for SQLite; only the execution skips
    SQLAlchemy's result machinery, which costs three times the query itself here (170 µs
    against 57 µs for ten messages). Rows come back raw: the ``*_sqlite`` mappers of
    :mod:`bot.store.rows` read the SQLite storage formats of
    :class:`~bot.store.engine.UtcDateTime` (ISO text) and :data:`~bot.store.engine.JsonType`
    (JSON text).

    Args:
        stmt: a select with named bind parameters (``b_...``).
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


def sqlite_executemany(conn: sa.Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    """``executemany`` on the pysqlite connection under ``conn`` (inside its transaction).

    Raises:
        sqlalchemy.exc.IntegrityError: a unique index refused a row (as SQLAlchemy would).
        sqlalchemy.exc.OperationalError: SQLite could not run it (e.g. the database is busy).
    """
    if not conn.in_transaction():
        conn.begin()  # so the caller's conn.commit() commits what the driver wrote
    driver = conn.connection.driver_connection
    try:
        driver.executemany(sql, params)  # type: ignore[union-attr]
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(sql, params, exc) from exc
    except sqlite3.OperationalError as exc:
        raise OperationalError(sql, params, exc) from exc
