"""The SQL :class:`~bot.store.base.Store`: SQLite by default, PostgreSQL in production.

SQLAlchemy 2 Core, one module per concept; :class:`SqlStore` composes them:

- :mod:`bot.store.engine`: engines and the portable column types; :mod:`bot.store.tables`: the
  schema; :mod:`bot.store.rows`: rows to records and back.
- :mod:`bot.store.batcher`: group commit (every write is a request on one queue served by a
  single writer task; one transaction per batch).
- :mod:`bot.store.sqlite` and :mod:`bot.store.postgres`: how statements reach each database.
- the concepts, one mixin each: :mod:`bot.store.messages` (with
  :mod:`bot.store.message_writes`), :mod:`bot.store.conversations`, :mod:`bot.store.outbox`,
  :mod:`bot.store.audit` (the hash-chained audit log), :mod:`bot.store.subjects`
  (data-subject export and erasure), :mod:`bot.store.retention`, :mod:`bot.store.agents`,
  :mod:`bot.store.assignment` (teams, presence, routing, assignment), :mod:`bot.store.sla`.

The names other packages build on (``make_engine``, ``JsonType``, ``UtcDateTime``, ``metadata``)
are re-exported here.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from bot.envelope import utcnow
from bot.errors import BackendUnavailable
from bot.store.agents import AgentsMixin
from bot.store.assignment import AssignmentMixin
from bot.store.audit import AuditRecord
from bot.store.batcher import BatchResult, Request
from bot.store.conversations import ConversationsMixin
from bot.store.engine import JsonType, UtcDateTime, json_dumps, make_engine, sync_sqlite_engine
from bot.store.message_writes import Append, Inbound
from bot.store.messages import MessagesMixin
from bot.store.outbox import OutboxMixin
from bot.store.postgres import AsyncRunner
from bot.store.retention import RetentionMixin
from bot.store.sla import SlaMixin
from bot.store.sqlite import InlineRunner, ThreadRunner
from bot.store.subjects import SessionsCall, SubjectsMixin
from bot.store.tables import metadata

__all__ = [
    "AuditRecord",
    "JsonType",
    "SqlStore",
    "UtcDateTime",
    "json_dumps",
    "make_engine",
    "metadata",
]

logger = logging.getLogger(__name__)


def _schema_outdated(conn: sa.Connection) -> bool:
    """True when the ``audit`` table predates the hash chain (Alembic 0004)."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns("audit")}
    return "seq" not in columns


class SqlStore(
    MessagesMixin,
    ConversationsMixin,
    OutboxMixin,
    SubjectsMixin,
    RetentionMixin,
    AgentsMixin,
    AssignmentMixin,
    SlaMixin,
):
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
        self._init_writer(settings)
        self._init_message_writes(settings)
        self._init_conversations()
        self._init_outbox()
        key = settings.audit_key
        self._audit_key = key.get_secret_value().encode() if key is not None else None

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
                outdated = await conn.run_sync(_schema_outdated)
            if outdated:
                await self._upgrade_schema(engine)
        except (OSError, DBAPIError) as exc:
            await engine.dispose()
            raise BackendUnavailable(f"cannot open the store database: {exc}") from exc
        self._engine = engine
        if engine.dialect.name == "sqlite":
            # The writer leaves checkpoints (which wait for the disk) to the checkpointer thread.
            # Neither waits in SQLite's busy handler: see bot.store.sqlite.run_patiently.
            self._start_writer(
                InlineRunner(
                    sync_sqlite_engine(self._url),
                    setup=["PRAGMA wal_autocheckpoint=0", "PRAGMA busy_timeout=0"],
                ),
                InlineRunner(sync_sqlite_engine(self._url), setup=["PRAGMA busy_timeout=0"]),
                ThreadRunner(sync_sqlite_engine(self._url), "store-checkpoint"),
                raw_sqlite=True,
            )
        else:
            self._start_writer(
                AsyncRunner(engine, dedicated=True),
                AsyncRunner(engine, dedicated=False),
                None,
                raw_sqlite=False,
            )
        logger.info("store.opened", extra={"dialect": engine.dialect.name})

    async def _upgrade_schema(self, engine: AsyncEngine) -> None:
        """Migrate a database made by an older version whose tables lack new columns.

        ``create_all`` adds missing tables but never columns: such a database (the embedded
        default, or a server database before ``switchboard db upgrade``) is upgraded here.
        """
        from bot.store.migrate import run_upgrade  # loads plugin tables: not at import time

        async with engine.begin() as conn:
            revision = await conn.run_sync(run_upgrade, "head")
        logger.info("store.schema_upgraded", extra={"revision": revision})

    async def close(self) -> None:
        """Flush pending writes, stop the writer and close connections."""
        if self._engine is None:
            return
        await self._stop_writer()
        await self._engine.dispose()
        self._engine = None
        logger.info("store.closed")

    # --- how a batch runs, and what the caches learn from it ------------------------------------

    def _execute(self, conn: sa.Connection, batch: list[Request], *, checked: bool) -> BatchResult:
        """Run one batch inside the connection's transaction; the caller commits.

        ``checked`` looks up stored dedupe and idempotency keys first; unchecked, a stored key
        makes the insert fail on its unique index (see
        :meth:`bot.store.batcher.WriteBatcher._commit`).

        Messages first (conversations, then rows), then ``mark_handled`` updates, then serial
        calls (mode changes, meta, agents, outbox) in queue order, then audit rows. Requests in
        one batch were all in flight together, so no caller can observe this order.
        """
        now = utcnow()
        result = BatchResult([None] * len(batch))
        if any(isinstance(r, Inbound | Append) for r in batch):
            self._write_messages(conn, batch, now, result, checked=checked)
        self._write_handled(conn, batch)
        self._run_calls(conn, batch, now, result)
        self._write_audits(conn, batch, now)
        return result

    def _committed(self, batch: list[Request], result: BatchResult) -> None:
        self._remember_writes(result)
        self._refresh_conversations(batch, result)
        for req in batch:
            if isinstance(req, SessionsCall):  # erased or expired sessions: reload them
                self._forget(req)

    def _forget(self, req: Request) -> None:
        for key in req.sessions():
            self._sessions.pop(key, None)
            self._convs.pop(key, None)
