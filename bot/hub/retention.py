"""The retention sweeper: deletes what is past its age, every ``retention_sweep_s`` seconds.

The ages are the ``retention_*_days`` settings (:mod:`bot.store.retention`). One process sweeps
at a time: with shared (Redis) lanes the sweeper runs under the :class:`bot.leader.LeaderLease`
``switchboard:leader:retention`` (another process takes over within a lease when it stops);
with memory lanes there is one process and it sweeps directly. The first sweep runs at start.
A store without retention (not SQL), or settings that keep everything, start nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, Protocol, runtime_checkable

from bot.config import Settings
from bot.leader import KEY_PREFIX, SingletonLoop
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
        self._loop = SingletonLoop(
            "retention",
            lambda: self.sweep(),  # looked up per pass (replaceable)
            interval_s=self.interval_s,
            key=LEASE_KEY,
            lease_client=lease_client,
            lease_s=settings.receiver_lease_s,
        )
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
        if self.enabled:
            self._loop.start()

    async def stop(self) -> None:
        """Stop sweeping (a sweep in progress is cancelled: its transaction rolls back)."""
        await self._loop.stop()

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
