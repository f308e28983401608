"""The retention sweeper: deletes what is past its age, every ``retention_sweep_s`` seconds.

The ages are the ``retention_*_days`` settings (:mod:`bot.store.retention`). One process sweeps
at a time: with shared (Redis) lanes the sweeper runs under the :class:`bot.leader.LeaderLease`
``switchboard:leader:retention`` (another process takes over within a lease when it stops);
with memory lanes there is one process and it sweeps directly. The first sweep runs at start.
A store without retention (not SQL), or settings that keep everything, start nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final, Protocol, runtime_checkable

from bot.config import Settings
from bot.errors import SwitchboardError
from bot.leader import KEY_PREFIX, LeaderLease
from bot.store.retention import RetentionPolicy, RetentionReport

log = logging.getLogger(__name__)

LEASE_KEY: Final = f"{KEY_PREFIX}retention"
"""The Redis lease of the process that sweeps."""


@runtime_checkable
class RetentionStore(Protocol):
    """A store that can delete what is past its age (:class:`~bot.store.sql.SqlStore`)."""

    async def apply_retention(self, policy: RetentionPolicy) -> RetentionReport:
        """Delete expired records; returns the counts."""


class RetentionSweeper:
    """Runs :meth:`RetentionStore.apply_retention` periodically in one process.

    Args:
        settings: ``retention_*_days``, ``retention_sweep_s`` (seconds between sweeps) and
            ``receiver_lease_s`` (the lease timeout, as for pull receivers).
        store: the hub's store; nothing runs unless it is a :class:`RetentionStore`.
        lease_client: a redis-py asyncio client (shared lanes), or None (one process).
    """

    def __init__(self, settings: Settings, store: Any, lease_client: Any = None) -> None:
        self.policy = RetentionPolicy.from_settings(settings)
        self.interval_s = settings.retention_sweep_s
        self._store = store if isinstance(store, RetentionStore) else None
        self._client = lease_client
        self._lease_s = settings.receiver_lease_s
        self._lease: LeaderLease | None = None
        self._task: asyncio.Task[None] | None = None
        self.sweeps = 0
        """Sweeps this process finished."""
        self.swept = asyncio.Event()
        """Set once this process finished a sweep."""

    @property
    def enabled(self) -> bool:
        """True when something would ever be deleted by this store."""
        return self._store is not None and self.policy.active

    def start(self) -> None:
        """Start sweeping (directly, or when this process holds the lease)."""
        if not self.enabled or self._task is not None or self._lease is not None:
            return
        if self._client is None:
            self._begin()
            return
        self._lease = LeaderLease(
            self._client,
            LEASE_KEY,
            on_acquired=self._on_acquired,
            on_lost=self._end,
            lease_s=self._lease_s,
        )
        self._lease.start()

    async def stop(self) -> None:
        """Stop sweeping (a sweep in progress is cancelled: its transaction rolls back)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.stop()
        await self._end()

    async def sweep(self) -> RetentionReport:
        """One sweep now, logged as ``retention.swept`` with the counts and the audit head.

        The head (``SEQ:HASH``) in the log archive is a copy of the chain outside the database,
        for ``switchboard audit verify --expect-head``.
        """
        assert self._store is not None
        report = await self._store.apply_retention(self.policy)
        self.sweeps += 1
        self.swept.set()
        head = report.audit_head
        log.info(
            "retention.swept",
            extra={
                "deleted": report.deleted,
                "audit_head": f"{head.seq}:{head.hash}" if head is not None else None,
            },
        )
        return report

    async def _on_acquired(self) -> None:
        self._begin()

    def _begin(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention-sweeper")

    async def _end(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except SwitchboardError as exc:  # the database is down: try at the next interval
                log.warning("retention.failed", extra={"error": repr(exc)})
            except Exception:  # task boundary: the sweeper must survive
                log.exception("retention.failed")
            await asyncio.sleep(self.interval_s)
