"""The store's write batcher: group commit on one writer connection, reads on another.

Every write call becomes a request on one in-memory queue served by a single writer task. The
writer takes whatever is queued, runs it as one transaction (grouped into ``executemany``
statements), commits, and only then resolves each caller's future, so an awaited write is
committed. When the writer is idle a request starts a batch at once (writes that queue meanwhile
form the next batch); under load (the last batch held ``LOADED_BATCH`` requests or more) batches
start at most every ``store_batch_ms`` milliseconds, to commit more per transaction. A failing
batch is rolled back and its requests are retried one by one, so only the bad request fails.

:class:`WriteBatcher` is the base of the store's concept mixins (:mod:`bot.store.messages`,
:mod:`bot.store.conversations`...): they submit requests, and the store that composes them
(:class:`bot.store.sql.SqlStore`) says how a batch runs (:meth:`WriteBatcher._execute`) and
what its caches learn from a commit (:meth:`WriteBatcher._committed`).
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from bot.config import Settings
from bot.envelope import Participant, SessionKey
from bot.errors import BackendUnavailable, Conflict, PayloadInvalid, SwitchboardError
from bot.store.engine import Runner
from bot.store.sqlite import run_patiently

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

_T = TypeVar("_T")


@dataclass(slots=True, eq=False)
class Request:
    """A write waiting for the writer; ``fut`` gets its outcome once the batch committed."""

    fut: asyncio.Future[Any]

    def sessions(self) -> Iterable[SessionKey]:
        """The sessions whose cached counters the request depends on."""
        return ()


CallFn = Callable[[sa.Connection, datetime], Any]
"""A serial operation: ``fn(conn, now)`` inside the batch's transaction; returns the outcome."""


@dataclass(slots=True, eq=False)
class Call(Request):
    """A serial operation; it may raise a SwitchboardError only before it writes anything."""

    fn: CallFn
    conversation: SessionKey | None = None  # whose conversation row it may change


@dataclass(slots=True)
class SessionState:
    """The writer's counter of a session: its last ``seq``, and whether it has a conversation."""

    last_seq: int
    has_conversation: bool


@dataclass(slots=True)
class BatchResult:
    """What one batch did: each request's outcome, and what its message writes changed.

    Attributes:
        outcomes: per request, in batch order: its result, or the SwitchboardError it raised.
        sessions: the counters of the sessions the batch wrote messages to.
        dedupe_keys: ``(channel, account, event_id)`` of the customer messages it saw.
        written_at: the batch's timestamp when it wrote messages.
        customers: sessions whose stored customer the batch refreshed, with the new one.
    """

    outcomes: list[Any]
    sessions: dict[SessionKey, SessionState] = field(default_factory=dict)
    dedupe_keys: list[tuple[str, str, str]] = field(default_factory=list)
    written_at: datetime | None = None
    customers: dict[SessionKey, Participant] = field(default_factory=dict)


def caller_error(exc: BaseException) -> BaseException:
    """The error a caller sees for a request that failed on its own.

    Returns:
        ``exc`` when it is a SwitchboardError; else Conflict (a constraint), BackendUnavailable
        (the database) or PayloadInvalid (a value it cannot hold), caused by ``exc``.
    """
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


class WriteBatcher(abc.ABC):
    """Group commit: the writer task, its queue, its connection, and the reader connection.

    Subclasses call :meth:`_init_writer` in ``__init__``, :meth:`_start_writer` once the
    database is open and :meth:`_stop_writer` at close; they submit writes with
    :meth:`_submit` and read with :meth:`_read`.
    """

    _raw_sqlite: bool
    """SQLite through ``pysqlite`` on the loop's thread (hot paths use raw SQL); else a server."""

    def _init_writer(self, settings: Settings) -> None:
        """Set up the queue; ``store_batch_ms`` is the group-commit window under load."""
        self._writer_runner: Runner | None = None
        self._reader_runner: Runner | None = None
        self._checkpointer: Runner | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._last_checkpoint_at = float("-inf")
        self._writer: asyncio.Task[None] | None = None
        self._pending: list[Request] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._batch_s = max(0.0, settings.store_batch_ms / 1000.0)
        self._last_batch_at = float("-inf")
        self._last_batch_size = 0
        self._raw_sqlite = False

    def _start_writer(
        self,
        writer: Runner,
        reader: Runner,
        checkpointer: Runner | None,
        *,
        raw_sqlite: bool,
    ) -> None:
        """Start the writer task on ``writer``; reads go to ``reader``.

        Args:
            writer: the writer's connection (this batcher closes it).
            reader: the readers' connection or pool (closed here too).
            checkpointer: SQLite: where WAL checkpoints run; None for a server database.
            raw_sqlite: see :attr:`_raw_sqlite`.
        """
        self._writer_runner = writer
        self._reader_runner = reader
        self._checkpointer = checkpointer
        self._raw_sqlite = raw_sqlite
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")

    async def _stop_writer(self) -> None:
        """Flush pending writes, stop the writer and close the runners."""
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

    async def _read(self, fn: Callable[[sa.Connection], _T]) -> _T:
        """Run a read on the reader connection (not the writer's)."""
        if self._reader_runner is None:
            raise BackendUnavailable("the store is closed")
        return await run_patiently(self._reader_runner, fn)

    def _future(self) -> asyncio.Future[Any]:
        """A future for a new request's outcome."""
        return asyncio.get_running_loop().create_future()

    async def _submit(self, req: Request) -> Any:
        """Queue ``req`` for the writer and wait until its batch committed.

        Returns:
            The request's outcome.

        Raises:
            bot.errors.BackendUnavailable: when the store is closed or the database cannot be
                written; whatever SwitchboardError the request raised.
        """
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
                    self._resolve(req, caller_error(exc))
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

    async def _commit(self, batch: list[Request]) -> None:
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

    def _fail(self, req: Request, error: Exception) -> None:
        self._forget(req)
        logger.warning(
            "store.write_failed",
            exc_info=error,
            extra={"session_key": next(iter(req.sessions()), None)},
        )
        self._resolve(req, caller_error(error))

    async def _try(self, batch: list[Request], *, checked: bool) -> Exception | None:
        """Run ``batch`` as one transaction; resolve its futures, or return the error."""
        assert self._writer_runner is not None
        run = functools.partial(self._transaction, batch, checked)
        try:
            result = await run_patiently(self._writer_runner, run)
        except Exception as exc:
            return exc
        self._committed(batch, result)
        for req, outcome in zip(batch, result.outcomes, strict=True):
            self._resolve(req, outcome)
        return None

    @staticmethod
    def _resolve(req: Request, outcome: Any) -> None:
        if req.fut.done():  # the caller was cancelled; the write stands
            return
        if isinstance(outcome, BaseException):
            req.fut.set_exception(outcome)
        else:
            req.fut.set_result(outcome)

    # --- batch execution (sync Core, on the writer's connection) --------------------------------

    @abc.abstractmethod
    def _execute(self, conn: sa.Connection, batch: list[Request], *, checked: bool) -> BatchResult:
        """Run one batch inside the connection's transaction; the caller commits.

        ``checked`` looks up stored dedupe and idempotency keys first; unchecked, a stored key
        makes an insert fail on its unique index (see :meth:`_commit`).
        """

    @abc.abstractmethod
    def _committed(self, batch: list[Request], result: BatchResult) -> None:
        """Update the in-memory caches after ``batch`` committed (before callers resume)."""

    @abc.abstractmethod
    def _forget(self, req: Request) -> None:
        """Drop what the caches hold for ``req``'s sessions (their counters may be stale)."""

    def _run_calls(
        self, conn: sa.Connection, batch: list[Request], now: datetime, result: BatchResult
    ) -> None:
        """Run the batch's serial calls in queue order; their outcomes go to ``result``."""
        for i, req in enumerate(batch):
            if isinstance(req, Call):
                try:
                    result.outcomes[i] = req.fn(conn, now)
                except SwitchboardError as exc:  # raised before the call wrote anything
                    result.outcomes[i] = exc

    def _transaction(
        self, batch: list[Request], checked: bool, conn: sa.Connection
    ) -> BatchResult:
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
