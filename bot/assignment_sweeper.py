"""The assignment sweeper: presence expiry, the waiting queue and SLA breaches, periodically.

Every ``assignment_sweep_s`` seconds one pass (:meth:`AssignmentSweeper.sweep`):

1. agents whose console session has been gone ``presence_timeout_s`` seconds go offline;
2. waiting conversations are handed to online agents with room (:meth:`Assignment.drain`:
   catches agents freed or come online in another process);
3. SLA breaches that are due are recorded and announced (:meth:`bot.sla.Sla.sweep`).

One process at a time runs it: with shared (Redis) lanes under the :class:`bot.leader.LeaderLease`
``switchboard:leader:assignment``; with memory lanes (one process) directly. Every step is a
compare-and-set in the store, so a second sweeper (a lease taken over mid-pass) does no harm.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.assignment import Assignment
from bot.leader import KEY_PREFIX, SingletonLoop

log = logging.getLogger(__name__)

LEASE_NAME = KEY_PREFIX + "assignment"
"""The Redis lease key of the sweeper."""


class AssignmentSweeper:
    """Runs :meth:`sweep` every ``interval_s`` seconds in one process (see the module docstring).

    Args:
        assignment: the hub's assignment service.
        interval_s: seconds between passes (``assignment_sweep_s``).
        lease_client: a redis-py asyncio client for the lease, or None (run directly).
        lease_s: the lease timeout in seconds (``receiver_lease_s``).
    """

    def __init__(
        self,
        assignment: Assignment,
        *,
        interval_s: float,
        lease_client: Any = None,
        lease_s: float = 15.0,
    ) -> None:
        self.assignment = assignment
        self.interval_s = interval_s
        self._loop = SingletonLoop(
            "assignment.sweep",
            lambda: self.sweep(),  # looked up per pass (replaceable)
            interval_s=interval_s,
            key=LEASE_NAME,
            lease_client=lease_client,
            lease_s=lease_s,
        )

    async def sweep(self) -> dict[str, int]:
        """One pass; counts of ``offline`` agents, ``assigned`` conversations, ``breaches``."""
        gone = await self.assignment.expire_presence()
        assigned = await self.assignment.drain()
        breaches = await self.assignment.sla.sweep()
        return {"offline": len(gone), "assigned": assigned, "breaches": breaches}

    async def start(self) -> None:
        """Start sweeping (directly, or when this process takes the lease)."""
        self._loop.start()

    async def stop(self) -> None:
        """Stop sweeping and release the lease."""
        await self._loop.stop()
