""":class:`RedisLaneQueue`: the :class:`bot.lanes.base.LaneQueue` API over the Redis lanes.

It builds the parts of the backend (see :mod:`bot.lanes.redis` for the guarantees) and does
what belongs to no single one of them: ``enqueue`` (the session script, then a push for the
global loop), ``start``/``drain``/``close`` (the background tasks) and ``stats``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from bot.config import QueueMode
from bot.envelope import InboundMessage, SessionKey
from bot.errors import BackendUnavailable
from bot.lanes.base import (
    CANCEL_GRACE_S,
    LaneConfig,
    LaneLifecycle,
    LanePurge,
    LaneSelection,
    LaneStats,
    OverflowHandler,
    QueuedEntry,
    TurnHandler,
)
from bot.lanes.redis.batcher import LaneScripts
from bot.lanes.redis.client import UNAVAILABLE, Client, connect
from bot.lanes.redis.global_loop import GlobalLoop
from bot.lanes.redis.keys import LaneKeys, stored_name
from bot.lanes.redis.purge import LanePurger
from bot.lanes.redis.scripts import MODE_LETTER
from bot.lanes.redis.sweeper import Sweeper
from bot.lanes.redis.turns import TouchedSessions, TurnRunner
from bot.lanes.redis.wake import WakeChannel

logger = logging.getLogger("bot.lanes.redis")

_T = TypeVar("_T")


_ENQUEUE_OP: Final = {1: "p", 3: "q"}
"""``S_ENQUEUE``'s action → the global loop's op (see ``G_STEP``): push, or make sure it is."""


class RedisLaneQueue:
    """:class:`bot.lanes.base.LaneQueue` on Redis or Redis Cluster (see :mod:`bot.lanes.redis`).

    Args:
        config: caps, debounce window and idle time; every process sharing ``prefix`` should
            use the same values (the cap is the one passed by the claiming worker).
        url: the server or cluster (:mod:`bot.lanes.redis.client` lists the accepted forms).
        prefix: key prefix; processes with the same prefix share the lanes.
        worker_id: this process's name in leases and logs (default ``host:pid:random``).
        lease_s: seconds a turn's lease lasts without a heartbeat (heartbeats every third).
        poll_s: longest sleep of an idle consumer between claims, seconds (pub/sub wakes it
            earlier; the poll also reaps leases of dead workers).
        batch_window_s: seconds the global loop waits after being woken to gather more
            pushes and releases into one round trip (and to start turns in batches).
        local_turns: turns this process runs at once (default ``max_concurrent_turns``);
            set it to the cap divided by the number of workers to spread turns over workers.
        sweep_s: seconds between two rounds of the consumer's sweeper, which puts back in the
            ready zset sessions whose hash says ready but that no global structure holds (left
            by a crash between a session script and the global step).
        sweep_batch: session hashes one sweeper round looks at (``SCAN COUNT`` per node).
        sweep_age_s: seconds a session must have been ready (or its lease expired) before the
            sweeper considers it lost.

    Raises:
        ValueError: for an invalid config or URL.
    """

    def __init__(
        self,
        config: LaneConfig,
        url: str,
        *,
        prefix: str = "sb",
        worker_id: str | None = None,
        lease_s: float = 10.0,
        poll_s: float = 1.0,
        batch_window_s: float = 0.001,
        local_turns: int | None = None,
        sweep_s: float = 5.0,
        sweep_batch: int = 200,
        sweep_age_s: float = 2.0,
    ) -> None:
        config.check()
        if lease_s <= 0 or poll_s <= 0 or batch_window_s < 0:
            raise ValueError("lease_s and poll_s must be positive, batch_window_s not negative")
        if sweep_s <= 0 or sweep_batch < 1 or sweep_age_s < 0:
            raise ValueError("sweep_s and sweep_batch must be positive, sweep_age_s not negative")
        self._keys = LaneKeys(prefix)
        self._config = config
        self.worker_id = (
            worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._redis = connect(url)
        self._lua = LaneScripts(self._redis)
        self._scripts = self._lua.by_name  # by name (tests wrap one)
        self.channel = self._keys.channel
        self._life = LaneLifecycle()
        self._wake = asyncio.Event()
        self._touched = TouchedSessions()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turns = TurnRunner(
            self._lua,
            self._keys,
            config,
            self._life,
            self._wake,
            post=self._post,
            spawn=self._spawn,
            touched=self._touched,
            worker_id=self.worker_id,
            lease_s=lease_s,
            local_turns=local_turns or config.max_concurrent_turns,
        )
        self._running = self._turns.running  # the same dict (tests look into it)
        self._global = GlobalLoop(
            self._lua,
            self._keys,
            self._turns,
            self._wake,
            max_turns=config.max_concurrent_turns,
            lease_ms=self._turns.lease_ms,
            poll_s=poll_s,
            batch_window_s=batch_window_s,
            worker_id=self.worker_id,
        )
        self._sweeper = Sweeper(
            self._redis,
            self._lua,
            self._keys,
            self._wake,
            interval_s=sweep_s,
            batch=sweep_batch,
            age_s=sweep_age_s,
            worker_id=self.worker_id,
        )
        self._wake_channel = WakeChannel(
            self._redis,
            self._keys,
            self._turns,
            self._life,
            self._wake,
            spawn=self._spawn,
            worker_id=self.worker_id,
        )
        self._hb_task: asyncio.Task[None] | None = None
        self._sub_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._purger = LanePurger(self._redis, self._lua, self._keys)

    # --- keys ---------------------------------------------------------------------------------

    def session_keys(self, session: str) -> list[str]:
        """The Redis keys of one session: ``[list, hash]`` (one hash slot)."""
        return self._keys.session(session)

    @property
    def global_keys(self) -> list[str]:
        """The global keys ``[ready, delayed, slots, stats, held]`` (one hash slot)."""
        return list(self._keys.global_keys)

    @property
    def client(self) -> Client:
        """The redis-py client (shared with tests and diagnostics)."""
        return self._redis

    # --- public API ---------------------------------------------------------------------------

    async def start(self, handler: TurnHandler, on_overflow: OverflowHandler) -> None:
        """Start consuming: claim turns under the global cap and run them with ``handler``.

        Args:
            handler: runs one turn (see :data:`bot.lanes.base.TurnHandler`).
            on_overflow: told once per overflow episode (see :data:`OverflowHandler`).

        Raises:
            RuntimeError: when already started.
            bot.errors.Draining: when the queue was drained or closed.
        """
        self._life.start(handler, on_overflow)
        loop = asyncio.get_running_loop()
        subscription = self._wake_channel.subscription()
        self._sub_task = loop.create_task(subscription.run(), name="lane.redis.subscriber")
        self._global.ensure_running()
        self._hb_task = loop.create_task(self._turns.heartbeats(), name="lane.redis.heartbeat")
        self._sweep_task = loop.create_task(self._sweeper.run(), name="lane.redis.sweeper")
        self._wake.set()

    async def enqueue(self, msg: InboundMessage, mode: QueueMode) -> int:
        """Append ``msg`` to its session's lane in Redis (2 round trips).

        Args:
            msg: the message (already deduplicated and persisted by the hub).
            mode: the queue mode to schedule it under.

        Returns:
            Messages of that session waiting for a turn after this call (running turns
            excluded, carried interrupted turns and folded overflow included).

        Raises:
            bot.errors.Draining: when the queue is draining or closed.
            bot.errors.BackendUnavailable: when Redis cannot be reached (nothing was stored,
                or the message is stored but its session could not be scheduled; in both
                cases the platform may retry).
        """
        self._life.check_open()
        session = msg.session_key
        entry = MODE_LETTER[mode] + msg.model_dump_json()
        run = self._running.get(session)
        if run is not None and (run.handled or (run.child is not None and run.child.done())):
            # This process's turn of the session just ended: let its ack land first, so
            # the message finds an idle lane as it would a moment later.
            await run.settled.wait()
        try:
            action, pending, new_ep, new_lane, owner, token = await self._lua.batched(
                "S_ENQUEUE",
                self.session_keys(session),
                [entry, MODE_LETTER[mode], self._config.lane_cap, stored_name(session)],
            )
            self._touched.add(session)
        except UNAVAILABLE as exc:
            logger.warning(
                "lane.redis_unavailable",
                extra={"session_key": session, "event_id": msg.event_id, "error": repr(exc)},
            )
            # The script may have run and made the session ready, its reply lost: the global
            # loop makes sure the session is scheduled once Redis answers again.
            self._post("q", session)
            raise BackendUnavailable(f"redis lanes unavailable: {exc}") from exc
        self._post(_ENQUEUE_OP.get(int(action), ""), session, queued=1, lanes=int(new_lane))
        if action == 1 and self._global.free_slots > 0:
            pending = 0  # a slot is free: its turn starts at once and takes everything
        elif action == 2:
            await self._wake_channel.request_cancel(session, str(owner), str(token))
        if new_ep:
            logger.info(
                "lane.overflow",
                extra={"session_key": session, "lane_cap": self._config.lane_cap},
            )
            if self._life.on_overflow is not None:
                self._spawn(self._turns.take_notice(session))
            else:
                await self._wake_channel.offer_notice(session)
        logger.debug(
            "lane.enqueued",
            extra={"session_key": session, "event_id": msg.event_id, "channel": msg.channel},
        )
        return int(pending)

    async def drain(self, timeout_s: float) -> list[InboundMessage]:
        """Stop claiming turns, wait for running ones, hand back what is not handled.

        Waits up to ``timeout_s`` seconds for this process's running turns, then cancels the
        rest and gives their leases back (another worker resumes them at once). Turns that
        finished in time, even by raising, count as handled.

        Args:
            timeout_s: seconds to wait for running turns.

        Returns:
            The unhandled messages of the sessions this process touched, oldest first per
            session. They also stay in Redis for other workers (do not enqueue them again).
        """
        self._life.draining = True
        tasks = {r.task: r for r in self._running.values() if r.task is not None}
        cancelled = 0
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=max(timeout_s, 0.0))
            for task in still:
                run = tasks[task]
                if run.child is not None:
                    self._turns.cancel(run, "drain")
                    cancelled += 1
            if still:
                _, stuck = await asyncio.wait(still, timeout=CANCEL_GRACE_S)
                if stuck:
                    logger.warning("lane.turn_stuck", extra={"tasks": len(stuck)})
        # Let queued releases and pushes reach Redis (bounded).
        await self._global.flush(max(timeout_s, CANCEL_GRACE_S))
        await self._global.stop()
        for bg in (self._hb_task, self._sub_task, self._sweep_task):
            await self._stop_task(bg)
        self._hb_task = self._sub_task = self._sweep_task = None
        unhandled = await self._unhandled()
        logger.info(
            "lane.drained", extra={"unhandled": len(unhandled), "cancelled_turns": cancelled}
        )
        return unhandled

    async def ping(self) -> None:
        """Check that Redis answers (readiness probes; one ``PING``, retried like any command).

        Raises:
            bot.errors.BackendUnavailable: when Redis cannot be reached.
        """
        try:
            await self._redis.ping()
        except UNAVAILABLE as exc:
            raise BackendUnavailable(f"redis unreachable: {exc}") from exc

    def stats(self) -> LaneStats:
        """A snapshot (no I/O): global counters of the latest reply, local running turns."""
        queued, lanes, ready = self._global.counters()
        running = [r for r in self._running.values() if r.turn is not None]
        local = sum(r.size for r in running)
        return LaneStats(
            lanes=max(lanes, 0),
            queued=max(queued - local, 0),
            active_turns=len(running),
            ready_sessions=max(ready, 0),
        )

    async def close(self) -> None:
        """Drain (at once) if not drained, stop background tasks, close the connections.

        Messages stay in Redis; nothing is deleted.
        """
        if self._life.closed:
            return
        if not self._life.draining:
            await self.drain(0.0)
        self._life.closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CANCEL_GRACE_S)
        await self._redis.aclose()

    async def queued(self, select: LaneSelection) -> list[QueuedEntry]:
        """The queued messages ``select`` is about (:meth:`LanePurger.queued`, same contract)."""
        return await self._purger.queued(select)

    async def purge(self, select: LaneSelection, *, final: bool = False) -> LanePurge:
        """Purge every lane for ``select`` (:meth:`LanePurger.purge`, same contract).

        It works whether or not this queue was started or drained (not once closed).
        """
        return await self._purger.purge(select, final=final)

    async def sweep(self, cursors: dict[str, int] | None = None) -> tuple[dict[str, int], int]:
        """One sweeper round: :meth:`bot.lanes.redis.sweeper.Sweeper.sweep` (same contract)."""
        return await self._sweeper.sweep(cursors)

    @property
    def swept(self) -> int:
        """Sessions the sweeper put back in the ready zset (each one is logged)."""
        return self._sweeper.swept

    # --- the global loop and turns ------------------------------------------------------------

    def _post(
        self, op: str, session: str, delay_ms: int = 0, queued: int = 0, lanes: int = 0
    ) -> None:
        """Queue one operation for the global loop (:meth:`GlobalLoop.post`)."""
        self._global.post(op, session, delay_ms, queued, lanes)

    async def _try_ack(self, session: SessionKey, token: str) -> bool:
        """Acknowledge a turn by token (tests: a late ack of a dead worker is refused)."""
        return await self._turns.try_ack(session, token)

    # --- helpers ------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[_T]) -> None:
        async def boundary() -> None:
            try:
                await coro
            except UNAVAILABLE as exc:
                logger.warning("lane.redis_unavailable", extra={"error": repr(exc)})
            except Exception:
                logger.exception("lane.task_failed")

        task = asyncio.get_running_loop().create_task(boundary())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unhandled(self) -> list[InboundMessage]:
        sessions = list(self._touched)
        if not sessions:
            return []

        lists: list[list[Any]] = []
        try:
            for i in range(0, len(sessions), 256):
                pipe = self._redis.pipeline(transaction=False)
                for session in sessions[i : i + 256]:
                    pipe.lrange(self.session_keys(session)[0], 0, -1)
                lists += await pipe.execute()
        except UNAVAILABLE as exc:
            logger.warning("lane.redis_unavailable", extra={"error": repr(exc)})
            return []
        return [InboundMessage.model_validate_json(e[1:]) for entries in lists for e in entries]

    @staticmethod
    async def _stop_task(task: asyncio.Task[None] | None) -> None:
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_GRACE_S)

    async def _die(self) -> None:
        """Tests only: stop like a killed process (no ack, no yield, no heartbeat)."""
        self._life.draining = True
        tasks = (self._global.task, self._hb_task, self._sub_task, self._sweep_task)
        pending = {t for t in tasks if t}
        pending |= {r.task for r in self._running.values() if r.task is not None}
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
        self._life.closed = True
        await self._redis.aclose()
