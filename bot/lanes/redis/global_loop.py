"""The global loop: this process's one writer of the lanes' global slot.

Pushes (sessions that became ready) and releases (slots of ended turns) of many turns are
queued here and go to Redis together, in order, in one ``G_STEP`` script, with the counter
deltas of the enqueues and acks made meanwhile; the same round trip claims turns under the
global cap for the consumer (:class:`Consumer`) and returns the global counters that
``stats()`` reports. A batch whose script failed is kept, in order, and sent again with
exponential backoff: every operation is safe to apply twice, so none is ever dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from bot.envelope import SessionKey
from bot.lanes.base import CANCEL_GRACE_S
from bot.lanes.redis.batcher import LaneScripts
from bot.lanes.redis.client import RECONNECT_BACKOFF, unavailable
from bot.lanes.redis.keys import LaneKeys

logger = logging.getLogger("bot.lanes.redis")


class Consumer(Protocol):
    """The side of this process that runs the turns the global loop claims."""

    @property
    def consuming(self) -> bool:
        """Whether turns may be claimed now (started and not draining)."""

    def free_turns(self) -> int:
        """How many more turns this process may run now (0 when it runs its share)."""

    def launch(self, claims: list[tuple[SessionKey, str]]) -> None:
        """Start the turns of ``(session, fencing token)`` claims (slots now held)."""


class GlobalLoop:
    """Queues operations on the global slot and sends them in batches (module docstring).

    Args:
        scripts: the lane scripts (``G_STEP``).
        keys: the key names.
        consumer: runs the claimed turns.
        wake: set by anyone to wake the loop (work became ready, a turn ended, pub/sub).
        max_turns: the global cap on running turns.
        lease_ms: the lease of a claimed slot, milliseconds.
        poll_s: longest sleep of a consuming loop between two steps, seconds.
        batch_window_s: seconds the loop waits after being woken to gather more operations.
        worker_id: this process's name in logs.
    """

    def __init__(
        self,
        scripts: LaneScripts,
        keys: LaneKeys,
        consumer: Consumer,
        wake: asyncio.Event,
        *,
        max_turns: int,
        lease_ms: int,
        poll_s: float,
        batch_window_s: float,
        worker_id: str,
    ) -> None:
        self._scripts = scripts
        self._keys = keys
        self._consumer = consumer
        self._wake = wake
        self._max_turns = max_turns
        self._lease_ms = lease_ms
        self._poll_s = poll_s
        self._coalesce_s = batch_window_s
        self._worker_id = worker_id
        self._next_due: float | None = None  # loop time of the next quiet window's end
        self._ops: list[tuple[str, str, int]] = []  # in order
        self._pend_queued = self._pend_lanes = self._pend_ready = 0  # counter deltas queued
        self._send_queued = self._send_lanes = self._send_ready = 0  # ... and in flight
        self._flushed = asyncio.Event()
        self._snapshot = (0, 0, 0, 0)  # version, queued, lanes, ready
        self.free_slots = max_turns
        """Free global slots before the latest claim."""
        self.task: asyncio.Task[None] | None = None
        """The loop's task while it runs."""

    def post(
        self, op: str, session: str, delay_ms: int = 0, queued: int = 0, lanes: int = 0
    ) -> None:
        """Queue one operation (see ``G_STEP``) and counter deltas; ``""`` only claims.

        Args:
            op: ``p`` push, ``r`` release and push, ``d`` release and delay, ``n`` release
                only, ``q`` push only if no global structure holds the session (an
                ``S_ENQUEUE`` whose reply was lost may have left it ready but unscheduled),
                ``""`` nothing.
            session: the session key.
            delay_ms: the delay of ``d``, milliseconds.
            queued: change of the global count of queued messages.
            lanes: change of the global count of lanes.
        """
        if op:
            self._ops.append((op, session, delay_ms))
            if op == "p":
                self._pend_ready += 1
        self._pend_queued += queued
        self._pend_lanes += lanes
        self.ensure_running()
        self._wake.set()

    def ensure_running(self) -> None:
        """Start the loop's task unless it runs."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name="lane.redis.global"
            )

    def counters(self) -> tuple[int, int, int]:
        """``(queued, lanes, ready)``: the latest reply's counters plus the deltas not in it."""
        _, queued, lanes, ready = self._snapshot
        queued += self._pend_queued + self._send_queued
        lanes += self._pend_lanes + self._send_lanes
        ready += self._pend_ready + self._send_ready
        return queued, lanes, ready

    async def flush(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s`` seconds) until the running loop sent what is queued."""
        if self.task is not None and not self.task.done():
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), timeout_s)

    async def stop(self) -> None:
        """Cancel the loop's task (bounded wait); a later :meth:`post` starts a new one."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S)

    def _has_ops(self) -> bool:
        return bool(self._ops or self._pend_queued or self._pend_lanes)

    async def _run(self) -> None:
        """Task boundary: the loop.

        Applies queued pushes and releases, claims turns under the global cap and starts them;
        sleeps until woken (enqueue, turn end, pub/sub), a quiet window ends or ``poll_s``
        passed (reaping dead workers' leases). Reconnects with exponential backoff when Redis
        is unreachable.
        """
        failures = 0
        loop = asyncio.get_running_loop()
        consumer = self._consumer
        while True:
            consuming = consumer.consuming
            if not self._has_ops() and not self._wake.is_set():
                self._flushed.set()
                deadline = None
                if consuming:
                    deadline = loop.time() + self._poll_s
                    if self._next_due is not None:
                        deadline = min(deadline, self._next_due)
                timeout = None if deadline is None else max(deadline - loop.time(), 0.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            if self._coalesce_s > 0:
                await asyncio.sleep(self._coalesce_s)  # gather more operations per round trip
            self._wake.clear()
            consuming = consumer.consuming
            full = consumer.free_turns() == 0
            if not self._has_ops() and (not consuming or full):
                continue
            self._flushed.clear()
            ops, self._ops = self._ops, []
            dq, dl, dr = self._pend_queued, self._pend_lanes, self._pend_ready
            self._pend_queued = self._pend_lanes = self._pend_ready = 0
            self._send_queued, self._send_lanes, self._send_ready = dq, dl, dr
            try:
                res = await self._scripts.run(
                    "G_STEP", self._keys.global_keys, self._step_args(ops, dq, dl, consuming)
                )
            except Exception as exc:  # task boundary: no operation is ever dropped
                # Keep the batch (in order, before newer operations) and try again. Every
                # operation is safe to apply twice, should the script have run after all.
                self._ops[:0] = ops
                self._pend_queued += dq
                self._pend_lanes += dl
                self._pend_ready += dr
                failures += 1
                delay = RECONNECT_BACKOFF.compute(failures)
                extra = {"worker": self._worker_id, "retry_in_s": delay, "error": repr(exc)}
                if unavailable(exc):
                    logger.warning("lane.redis_unavailable", extra=extra)
                else:
                    logger.exception("lane.global_step_failed", extra=extra)
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            finally:
                self._send_queued = self._send_lanes = self._send_ready = 0
            if failures:
                logger.info("lane.redis_reconnected", extra={"worker": self._worker_id})
                failures = 0
            try:
                self._stepped(res)
            except Exception:  # task boundary: unclaimed slots expire and are reaped
                logger.exception("lane.global_step_failed", extra={"worker": self._worker_id})

    def _step_args(
        self, ops: list[tuple[str, str, int]], dq: int, dl: int, claim: bool
    ) -> list[str | int]:
        """The ``G_STEP`` arguments: apply ``ops``, claim what the cap allows."""
        claims = self._consumer.free_turns() if claim else 0
        args: list[str | int] = [
            dq,
            dl,
            claims,
            self._lease_ms,
            self._max_turns,
            self._keys.channel,
        ]
        args.append(0 if claim else 1)  # a consumer claims its own pushes: no wake-up needed
        for op, session, delay in ops:
            args += [op, session, delay]
        return args

    def _stepped(self, res: list[Any]) -> None:
        """Take the reply of one ``G_STEP``: counters, next due time, start claimed turns."""
        snap = (int(res[0]), int(res[1]), int(res[2]), int(res[3]))
        if snap[0] > self._snapshot[0] or snap[0] < self._snapshot[0] - 1_000_000:
            self._snapshot = snap
        next_ms = int(res[4])
        self.free_slots = int(res[5])
        loop = asyncio.get_running_loop()
        self._next_due = None if next_ms < 0 else loop.time() + next_ms / 1000.0
        pairs = res[6:]
        if pairs:
            got = zip(pairs[::2], pairs[1::2], strict=True)
            self._consumer.launch([(SessionKey(str(s)), str(t)) for s, t in got])
