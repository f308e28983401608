"""Recovery of accepted messages that are on no lane (see :mod:`bot.hub`).

Memory lanes: every stored, unhandled message is re-enqueued at start. Shared lanes: a sweep
every ``RECOVERY_INTERVAL_S`` seconds (in consuming processes) re-enqueues stored unhandled
messages that stayed without an enqueued mark over two sweeps, each under a claim so two
processes never both do it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from bot.errors import BackendUnavailable, Draining
from bot.hub.ingest import Ingress
from bot.store.base import Store

if TYPE_CHECKING:
    from bot.events_redis import EnqueueMarks

log = logging.getLogger(__name__)

RECOVERY_INTERVAL_S = 30.0
"""Seconds between recovery sweeps of processes consuming shared lanes."""


class Recovery:
    """Puts accepted but unqueued messages back on their lanes.

    Args:
        store: where the unhandled messages are.
        ingress: enqueues (and marks) them, and reads the enqueued marks.
        marks: enqueued marks of shared lanes (None: memory lanes).
    """

    def __init__(self, store: Store, ingress: Ingress, marks: EnqueueMarks | None) -> None:
        self.store = store
        self.ingress = ingress
        self.marks = marks
        self._suspects: set[tuple[str, str, str]] = set()
        self._loop: asyncio.Task[None] | None = None

    async def requeue_unhandled(self) -> int:
        """Memory lanes, at start: re-enqueue every stored message that is not handled.

        Returns:
            How many messages were re-enqueued.

        Raises:
            bot.errors.BackendUnavailable: when the store cannot be read.
        """
        recovered = await self.store.unhandled()
        for msg in recovered:
            await self.ingress.enqueue(msg)
        if recovered:
            log.info("hub.recovered", extra={"messages": len(recovered)})
        return len(recovered)

    def start(self) -> None:
        """Start the sweep loop (shared lanes, consuming processes)."""
        self._loop = asyncio.create_task(self._sweep_loop(), name="hub.recovery")

    async def stop(self) -> None:
        """Stop the sweep loop, if it runs."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.wait({self._loop})
            self._loop = None

    async def _sweep_loop(self) -> None:
        """Task boundary: run :meth:`recover_unmarked` every ``RECOVERY_INTERVAL_S`` seconds."""
        while True:
            try:
                await self.recover_unmarked()
            except (BackendUnavailable, Draining) as exc:
                log.warning("hub.recovery_failed", extra={"error": repr(exc)})
            except Exception:
                log.exception("hub.recovery_failed")
            await asyncio.sleep(RECOVERY_INTERVAL_S)

    async def recover_unmarked(self) -> int:
        """One recovery sweep of shared lanes; returns how many messages it re-enqueued.

        Re-enqueues stored, unhandled messages that have no enqueued mark now and had none at
        the previous sweep of this process (so an ingest between its store write and its
        enqueue is never taken for lost).

        Returns:
            How many messages this sweep put back on their lanes (0 with memory lanes).

        Raises:
            bot.errors.BackendUnavailable: when Redis or the store cannot be reached.
        """
        if self.marks is None:
            return 0
        msgs = await self.store.unhandled()
        flags = await self.ingress.marked(msgs)
        unmarked = [m for m, ok in zip(msgs, flags, strict=True) if not ok]
        due = [m for m in unmarked if m.dedupe_key in self._suspects]
        self._suspects = {m.dedupe_key for m in unmarked} - {m.dedupe_key for m in due}
        done = 0
        for msg in due:
            try:
                claimed = await self.marks.claim(msg, RECOVERY_INTERVAL_S * 2)
            except (OSError, RedisError) as exc:
                raise BackendUnavailable(f"cannot claim recovery: {exc}") from exc
            if claimed:
                await self.ingress.enqueue(msg)
                done += 1
        if done:
            log.warning("hub.recovered", extra={"messages": done})
        return done
