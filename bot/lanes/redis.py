"""The Redis lane backend: many ingress and worker processes on many hosts share the lanes.

:class:`RedisLaneQueue` keeps every lane in Redis (or Redis Cluster) and runs the turns this
process claims. It has the semantics of :mod:`bot.lanes.base` (the contract suite in
``tests/lanes/`` runs unchanged on it) plus the guarantees of several processes:

- **Stored before acknowledged.** ``enqueue`` returns only after Redis holds the message; when
  Redis cannot be reached it raises :class:`bot.errors.BackendUnavailable` (ingress answers
  503 and the platform retries). With AOF (``appendfsync always``) nothing accepted is lost
  across a Redis restart.
- **Removed only when handled.** A turn's messages stay at the head of the session's list
  until the handler returned (``ack``); a worker that dies mid-turn loses its lease after
  ``lease_s`` seconds and another worker resumes the same turn from the first unfinished
  message. Leases carry a fencing token (a global ``INCR``): a worker whose lease was taken
  over cannot acknowledge (``lane.ack_refused``) and its turn is cancelled at its next
  heartbeat. Replies of a resumed turn must carry an idempotency key (the hub's job).
- **One turn per session, a global cap across all processes.** A session's lease (heartbeat
  every ``lease_s / 3``) is held in the session's hash; the cap is a zset of slot leases
  (member: session, score: expiry) that every worker's claim script counts.
- **Fair.** Sessions with work wait in one ready zset ordered by a sequence number; a session
  whose turn ended goes to its back. Sessions of dead workers are resumed first.
- **No session stuck.** The global loop keeps a batch of pushes and releases until Redis took
  it, whatever the error; a push meeting a still-held slot waits in the held set for that
  slot's release. For what a crash can still leave (a session script ran, its global step
  never did), each consumer runs a sweeper every ``sweep_s`` seconds: a bounded ``SCAN`` of
  session hashes, one ``S_STUCK`` script per session, one ``G_SWEEP`` to re-add those that no
  global structure holds (logged as ``lane.swept``). It costs no round trip per message.
- **Idle lanes cost nothing.** A session's list disappears with its last message and its hash
  expires ``lane_idle_s`` seconds after its last turn; no task runs per idle session.

Keys (``P`` is the ``prefix``), every multi-key operation being one Lua script on one slot::

    {P:<session>}:q   list   waiting and running messages, oldest first   (session slot)
    {P:<session>}:h   hash   lane state, lease, fencing token             (session slot)
    {P}:ready         zset   sessions ready for a turn (score: sequence)  (global slot)
    {P}:delayed       zset   sessions in a collect quiet window (due ms)  (global slot)
    {P}:slots         zset   running turns across all workers (lease ms)  (global slot)
    {P}:stats         hash   counters: queued, lanes, seq, fence, ver     (global slot)
    {P}:held          set    sessions ready again once their slot is freed (global slot)

Pub/sub channel ``P:wake`` (JSON) wakes workers when work became ready, asks a worker to
cancel a turn (``interrupt`` from another process) and offers overflow notices to workers.

Hot path per message (``followup`` mode, one message per turn): ``enqueue`` = 2 round trips
(session script, global script); a turn = begin (1), ack (1), release-and-claim-next (1); so
5 round trips per message, fewer in ``collect`` mode where a turn takes several messages.

URLs (``url``): ``redis://[user:pass@]host:port/db``, ``rediss://...`` and ``unix://...``
select one server; a Redis Cluster is named by ``redis+cluster://[user:pass@]h1:p1,h2:p2``
(``rediss+cluster://`` for TLS) or by a comma-separated list of nodes, either
``h1:p1,h2:p2`` or ``redis://h1:p1,redis://h2:p2``; any reachable node is enough to discover
the rest.

``drain`` stops claiming turns, waits (bounded) for this process's running turns and gives
back the leases of those it cancels (another worker resumes them at once). It returns the
messages still unhandled of the sessions this process touched (enqueued to or ran); those
messages also stay in Redis for other workers, so nothing is lost and the caller must not
enqueue them again.

``stats()`` needs no I/O: ``active_turns`` counts this process's running turns;
``queued``, ``lanes`` and ``ready_sessions`` are the global counters of the latest reply from
the global slot, minus the messages of this process's running turns for ``queued``. The
counters may drift by a turn's messages when a worker dies between its ``ack`` and its
release (a window of one round trip).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.config import QueueMode
from bot.envelope import InboundMessage, SessionKey
from bot.errors import BackendUnavailable, Draining
from bot.lanes import redis_scripts as lua
from bot.lanes.base import LaneConfig, LaneStats, OverflowHandler, Turn, TurnHandler
from bot.lanes.redis_batch import ScriptBatcher
from bot.redis_pubsub import Subscription

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Client = aioredis.Redis | RedisCluster

_MODE_LETTER: Final = {QueueMode.COLLECT: "c", QueueMode.FOLLOWUP: "f", QueueMode.INTERRUPT: "i"}
_LETTER_MODE: Final = {v: k for k, v in _MODE_LETTER.items()}
_UNAVAILABLE: Final = (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError)
"""Errors that mean "Redis cannot be reached" (not a bug in a script)."""

_CANCEL_GRACE_S: Final = 1.0
"""Seconds ``drain``/``close`` wait for cancelled turn tasks to unwind."""


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, _UNAVAILABLE)


@dataclass(slots=True)
class _Running:
    """One slot this process holds: a session between claim and release."""

    session: SessionKey
    token: str
    task: asyncio.Task[None] | None = None
    turn: Turn | None = None
    child: asyncio.Task[None] | None = None
    handled: bool = False  # the handler returned; its ack is in flight
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str | None = None  # "interrupt", "lost", "drain", "die"

    @property
    def size(self) -> int:
        return len(self.turn.all_messages) if self.turn is not None else 0


def _named(session: str) -> str:
    """The session key when its hash tag is a digest (stored for the sweeper), else ``""``."""
    return session if "{" in session or "}" in session else ""


def _session_tag(prefix: str, session: str) -> str:
    """The hash tag of a session's keys; a digest when the key itself holds braces."""
    if "{" in session or "}" in session:
        return f"{prefix}:#{hashlib.sha1(session.encode()).hexdigest()}"
    return f"{prefix}:{session}"


POOL_MAX_CONNECTIONS: Final = 64
"""Connections per process to a single Redis server."""
POOL_WAIT_S: Final = 5.0
"""Seconds a command waits for a free pooled connection before failing."""


def connect(url: str, *, retries: int = 3) -> _Client:
    """A redis-py asyncio client for ``url`` (see the module docstring for the forms).

    Commands are retried ``retries`` times on connection errors with exponential backoff
    (redis-py's ``Retry``/``ExponentialBackoff``, 20 ms doubling up to 0.5 s).

    Raises:
        ValueError: when a cluster URL names no node.
    """
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries)
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        "retry": retry,
    }
    scheme, sep, rest = url.partition("://")
    cluster = scheme.endswith("+cluster") or "," in url
    if not cluster:
        # A blocking pool: a burst of concurrent enqueues waits for a free connection (up to
        # POOL_WAIT_S seconds) instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            **common,
        )
        client: aioredis.Redis = aioredis.Redis.from_pool(pool)
        return client
    if not sep:
        scheme, rest = "redis", url
    username = password = None
    nodes: list[ClusterNode] = []
    for part in rest.split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if "@" in part:
            auth, part = part.rsplit("@", 1)
            user, _, pw = auth.partition(":")
            username, password = unquote(user) or None, unquote(pw) or None
        hostport = part.split("/", 1)[0]
        if not hostport:
            continue
        host, _, port = hostport.rpartition(":")
        nodes.append(ClusterNode(host or hostport, int(port) if host else 6379))
    if not nodes:
        raise ValueError(f"no cluster node in {url!r}")
    return _ClusterClient(
        startup_nodes=nodes,
        username=username,
        password=password,
        ssl=scheme.startswith("rediss"),
        **common,
    )


class _ClusterClient(RedisCluster):
    """redis-py's asyncio ``RedisCluster``, safe under hundreds of concurrent callers.

    Two guards around every command:

    - **Initialized first.** A command issued while the client has no slot map (before the
      first use, or after it reset itself on an error) is routed by a default policy to some
      node and answered ``MOVED``; every ``reinitialize_steps`` (5) ``MOVED`` answers the
      client calls ``aclose()``, which closes the connections other tasks are using, and they
      fail with ``AttributeError: 'NoneType' object has no attribute 'writelines'``
      (redis-py 8.1; see redis/redis-py#4322 on the ``MOVED``/``aclose`` path). So each
      command first awaits ``initialize()`` (free once initialized; callers queue on its
      lock while it runs).
    - **Bounded in flight.** At most ``POOL_MAX_CONNECTIONS`` commands run at once; the others
      wait up to ``POOL_WAIT_S`` seconds (the per-node pool raises ``MaxConnectionsError`` at
      once when it is exhausted, unlike the blocking pool of the single-server client).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(POOL_MAX_CONNECTIONS)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run one command once the slot map is known, within the in-flight bound.

        Raises:
            redis.exceptions.ConnectionError: when no slot frees within ``POOL_WAIT_S``, or
                as ``RedisCluster.execute_command`` does.
        """
        if self._initialize:
            await self.initialize()
        try:
            async with asyncio.timeout(POOL_WAIT_S):
                await self._in_flight.acquire()
        except TimeoutError:
            raise RedisConnectionError("no free cluster connection") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._in_flight.release()


class RedisLaneQueue:
    """:class:`bot.lanes.base.LaneQueue` on Redis or Redis Cluster (see the module docstring).

    Args:
        config: caps, debounce window and idle time; every process sharing ``prefix`` should
            use the same values (the cap is the one passed by the claiming worker).
        url: the server or cluster (module docstring lists the accepted forms).
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
        if config.max_concurrent_turns < 1 or config.lane_cap < 1:
            raise ValueError("max_concurrent_turns and lane_cap must be at least 1")
        if config.debounce_ms < 0 or config.lane_idle_s < 0:
            raise ValueError("debounce_ms and lane_idle_s must not be negative")
        if lease_s <= 0 or poll_s <= 0 or batch_window_s < 0:
            raise ValueError("lease_s and poll_s must be positive, batch_window_s not negative")
        if sweep_s <= 0 or sweep_batch < 1 or sweep_age_s < 0:
            raise ValueError("sweep_s and sweep_batch must be positive, sweep_age_s not negative")
        if "{" in prefix or "}" in prefix:
            raise ValueError("prefix must not contain braces")
        self._config = config
        self._prefix = prefix
        self.worker_id = (
            worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._lease_ms = max(int(lease_s * 1000), 1)
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._idle_ms = int(config.lane_idle_s * 1000)
        self._redis = connect(url)
        # Enqueues, begins and acks made together go out as one pipeline (single server only).
        self._batch = (
            ScriptBatcher(self._redis) if isinstance(self._redis, aioredis.Redis) else None
        )
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(getattr(lua, name))
            for name in (
                "S_ENQUEUE",
                "S_BEGIN",
                "S_ACK",
                "S_YIELD",
                "S_HEARTBEAT",
                "S_NOTICE",
                "G_STEP",
                "G_HEARTBEAT",
                "S_STUCK",
                "G_SWEEP",
            )
        }
        g = "{" + prefix + "}"
        self._gkeys = [f"{g}:ready", f"{g}:delayed", f"{g}:slots", f"{g}:stats", f"{g}:held"]
        self.channel = f"{prefix}:wake"
        self._handler: TurnHandler | None = None
        self._on_overflow: OverflowHandler | None = None
        self._running: dict[SessionKey, _Running] = {}
        self._touched: dict[SessionKey, None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._next_due: float | None = None  # loop time of the next quiet window's end
        self._pump_deadline = 0.0  # loop time the sleeping global loop wakes at (0: none)
        self._ops: list[tuple[str, str, int]] = []  # for the global loop, in order
        self._pend_queued = self._pend_lanes = self._pend_ready = 0  # counter deltas queued
        self._send_queued = self._send_lanes = self._send_ready = 0  # ... and in flight
        self._flushed = asyncio.Event()
        self._coalesce_s = batch_window_s
        self._local_turns = local_turns or config.max_concurrent_turns
        self._loop_task: asyncio.Task[None] | None = None
        self._snapshot = (0, 0, 0, 0)  # version, queued, lanes, ready
        self._free_slots = config.max_concurrent_turns  # free global slots, latest claim
        self._draining = False
        self._closed = False
        self._hb_task: asyncio.Task[None] | None = None
        self._sub_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._sweep_s = sweep_s
        self._sweep_batch = sweep_batch
        self._sweep_age_ms = int(sweep_age_s * 1000)
        self.swept = 0
        """Sessions the sweeper put back in the ready zset (each one is logged)."""
        self._backoff = ExponentialBackoff(cap=5.0, base=0.05)

    # --- keys ---------------------------------------------------------------------------------

    def session_keys(self, session: str) -> list[str]:
        """The Redis keys of one session: ``[list, hash]`` (one hash slot)."""
        tag = "{" + _session_tag(self._prefix, session) + "}"
        return [f"{tag}:q", f"{tag}:h"]

    @property
    def global_keys(self) -> list[str]:
        """The global keys ``[ready, delayed, slots, stats, held]`` (one hash slot)."""
        return list(self._gkeys)

    @property
    def client(self) -> _Client:
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
        if self._handler is not None:
            raise RuntimeError("lane queue already started")
        if self._draining or self._closed:
            raise Draining("lane queue is closed")
        self._handler = handler
        self._on_overflow = on_overflow
        loop = asyncio.get_running_loop()
        subscription = Subscription(
            self._redis,
            self._on_message,
            channels=[self.channel],
            on_state=self._on_subscribed,
            name="lane",
        )
        self._sub_task = loop.create_task(subscription.run(), name="lane.redis.subscriber")
        self._ensure_loop()
        self._hb_task = loop.create_task(self._heartbeats(), name="lane.redis.heartbeat")
        self._sweep_task = loop.create_task(self._sweeper(), name="lane.redis.sweeper")
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
        if self._draining or self._closed:
            raise Draining("lane queue is draining")
        session = msg.session_key
        entry = _MODE_LETTER[mode] + msg.model_dump_json()
        run = self._running.get(session)
        if run is not None and (run.handled or (run.child is not None and run.child.done())):
            # This process's turn of the session just ended: let its ack land first, so
            # the message finds an idle lane as it would a moment later.
            await run.settled.wait()
        try:
            action, pending, new_ep, new_lane, owner, token = await self._script(
                "S_ENQUEUE",
                self.session_keys(session),
                [entry, _MODE_LETTER[mode], self._config.lane_cap, _named(session)],
            )
            self._touch(session)
        except _UNAVAILABLE as exc:
            logger.warning(
                "lane.redis_unavailable",
                extra={"session_key": session, "event_id": msg.event_id, "error": repr(exc)},
            )
            raise BackendUnavailable(f"redis lanes unavailable: {exc}") from exc
        self._post("p" if action == 1 else "", session, queued=1, lanes=int(new_lane))
        if action == 1 and self._free_slots > 0:
            pending = 0  # a slot is free: its turn starts at once and takes everything
        elif action == 2:
            await self._request_cancel(session, str(owner), str(token))
        if new_ep:
            logger.info(
                "lane.overflow",
                extra={"session_key": session, "lane_cap": self._config.lane_cap},
            )
            if self._on_overflow is not None:
                self._spawn(self._take_notice(session))
            else:
                await self._publish({"t": "o", "s": session})
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
        self._draining = True
        tasks = {r.task: r for r in self._running.values() if r.task is not None}
        cancelled = 0
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=max(timeout_s, 0.0))
            for task in still:
                run = tasks[task]
                if run.child is not None:
                    self._cancel(run, "drain")
                    cancelled += 1
            if still:
                _, stuck = await asyncio.wait(still, timeout=_CANCEL_GRACE_S)
                if stuck:
                    logger.warning("lane.turn_stuck", extra={"tasks": len(stuck)})
        if self._loop_task is not None and not self._loop_task.done():
            # Let queued releases and pushes reach Redis (bounded).
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), max(timeout_s, _CANCEL_GRACE_S))
        for bg in (self._loop_task, self._hb_task, self._sub_task, self._sweep_task):
            await self._stop_task(bg)
        self._loop_task = self._hb_task = self._sub_task = self._sweep_task = None
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
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"redis unreachable: {exc}") from exc

    def stats(self) -> LaneStats:
        """A snapshot (no I/O): global counters of the latest reply, local running turns."""
        _, queued, lanes, ready = self._snapshot
        queued += self._pend_queued + self._send_queued
        lanes += self._pend_lanes + self._send_lanes
        ready += self._pend_ready + self._send_ready
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
        if self._closed:
            return
        if not self._draining:
            await self.drain(0.0)
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=_CANCEL_GRACE_S)
        await self._redis.aclose()

    # --- consumer -----------------------------------------------------------------------------

    def _post(
        self, op: str, session: str, delay_ms: int = 0, queued: int = 0, lanes: int = 0
    ) -> None:
        """Queue one operation for the global loop (see ``G_STEP``); ``""`` only claims.

        Pushes and releases of many turns go to Redis together, in order, in one script.
        """
        if op:
            self._ops.append((op, session, delay_ms))
            if op == "p":
                self._pend_ready += 1
        self._pend_queued += queued
        self._pend_lanes += lanes
        self._ensure_loop()
        self._wake.set()

    def _has_ops(self) -> bool:
        return bool(self._ops or self._pend_queued or self._pend_lanes)

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(
                self._global_loop(), name="lane.redis.global"
            )

    async def _global_loop(self) -> None:
        """The one writer of the global slot.

        Applies queued pushes and releases, claims turns under the global cap and starts them;
        sleeps until woken (enqueue, turn end, pub/sub), a quiet window ends or ``poll_s``
        passed (reaping dead workers' leases). Reconnects with exponential backoff when Redis
        is unreachable.
        """
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            consuming = self._handler is not None and not self._draining
            if not self._has_ops() and not self._wake.is_set():
                self._flushed.set()
                deadline = None
                if consuming:
                    deadline = loop.time() + self._poll_s
                    if self._next_due is not None:
                        deadline = min(deadline, self._next_due)
                self._pump_deadline = deadline or 0.0
                timeout = None if deadline is None else max(deadline - loop.time(), 0.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._pump_deadline = 0.0
            if self._coalesce_s > 0:
                await asyncio.sleep(self._coalesce_s)  # gather more operations per round trip
            self._wake.clear()
            consuming = self._handler is not None and not self._draining
            full = len(self._running) >= self._local_turns
            if not self._has_ops() and (not consuming or full):
                continue
            self._flushed.clear()
            ops, self._ops = self._ops, []
            dq, dl, dr = self._pend_queued, self._pend_lanes, self._pend_ready
            self._pend_queued = self._pend_lanes = self._pend_ready = 0
            self._send_queued, self._send_lanes, self._send_ready = dq, dl, dr
            try:
                res = await self._scripts["G_STEP"](
                    keys=self._gkeys, args=self._step_args(ops, dq, dl, claim=consuming)
                )
            except Exception as exc:  # task boundary: no operation is ever dropped
                # Keep the batch (in order, before newer operations) and try again. Every
                # operation is safe to apply twice, should the script have run after all.
                self._ops[:0] = ops
                self._pend_queued += dq
                self._pend_lanes += dl
                self._pend_ready += dr
                failures += 1
                delay = self._backoff.compute(failures)
                extra = {"worker": self.worker_id, "retry_in_s": delay, "error": repr(exc)}
                if _unavailable(exc):
                    logger.warning("lane.redis_unavailable", extra=extra)
                else:
                    logger.exception("lane.global_step_failed", extra=extra)
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            finally:
                self._send_queued = self._send_lanes = self._send_ready = 0
            if failures:
                logger.info("lane.redis_reconnected", extra={"worker": self.worker_id})
                failures = 0
            try:
                self._stepped(res)
            except Exception:  # task boundary: unclaimed slots expire and are reaped
                logger.exception("lane.global_step_failed", extra={"worker": self.worker_id})

    def _step_args(
        self, ops: list[tuple[str, str, int]], dq: int, dl: int, claim: bool
    ) -> list[str | int]:
        """The ``G_STEP`` arguments: apply ``ops``, claim what the cap allows."""
        cap = self._config.max_concurrent_turns
        claims = max(self._local_turns - len(self._running), 0) if claim else 0
        args: list[str | int] = [dq, dl, claims, self._lease_ms, cap, self.channel]
        args.append(0 if claim else 1)  # a consumer claims its own pushes: no wake-up needed
        for op, session, delay in ops:
            args += [op, session, delay]
        return args

    def _stepped(self, res: list[Any]) -> None:
        """Take the reply of one ``G_STEP``: counters, next due time, start claimed turns."""
        self._take_snapshot(res[:4])
        next_ms = int(res[4])
        self._free_slots = int(res[5])
        loop = asyncio.get_running_loop()
        self._next_due = None if next_ms < 0 else loop.time() + next_ms / 1000.0
        pairs = res[6:]
        if pairs:
            got = zip(pairs[::2], pairs[1::2], strict=True)
            self._launch([(SessionKey(str(s)), str(t)) for s, t in got])

    def _launch(self, claims: list[tuple[SessionKey, str]]) -> None:
        """Start the turns of one claim batch.

        Their begins go out together and their handlers start together once every begin
        answered.
        """
        runs: list[_Running] = []
        for session, token in claims:
            if session in self._running or self._draining:
                # Cannot happen with one slot per session; give the slot back to be safe.
                logger.warning("lane.duplicate_claim", extra={"session_key": session})
                self._post("r", session)
                continue
            run = _Running(session, token)
            self._running[session] = run
            runs.append(run)
        if not runs:
            return
        loop = asyncio.get_running_loop()
        begins = asyncio.gather(*(self._begin(r) for r in runs), return_exceptions=True)
        for i, run in enumerate(runs):
            run.task = loop.create_task(self._turn(run, begins, i))

    async def _begin(self, run: _Running) -> list[Any]:
        res: list[Any] = await self._script(
            "S_BEGIN",
            self.session_keys(run.session),
            [run.token, self.worker_id, self._lease_ms, self._config.debounce_ms],
        )
        return res

    async def _script(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        """Run a per-session script; batched with concurrent ones on a single server."""
        script = self._scripts[name]
        if self._batch is not None:
            return await self._batch(script, keys, args)
        return await script(keys=keys, args=args)

    async def _turn(
        self, run: _Running, begins: asyncio.Future[list[list[Any] | BaseException]], i: int
    ) -> None:
        """Task boundary of one claimed slot: begin, handle, ack, release (and claim next)."""
        session = run.session
        try:
            res = (await asyncio.shield(begins))[i]
            if isinstance(res, BaseException):
                raise res  # noqa: TRY301 - the batch's begin failed for this session
            kind = res[0]
            if kind != "t":
                self._running.pop(session, None)
                if kind == "e":
                    self._post("n", session)
                else:  # 'b' another live lease, 'l' quiet window: come back later
                    self._post("d", session, int(res[1]) + 1)
                return
            self._touch(session)
            entries = [InboundMessage.model_validate_json(e[1:]) for e in res[6:]]
            n_ov, letter, interrupted, notice, resumed = (
                int(res[1]),
                str(res[2]),
                bool(int(res[3])),
                int(res[4]),
                bool(int(res[5])),
            )
            run.turn = Turn(
                session,
                entries[n_ov:],
                overflow=entries[:n_ov],
                mode=_LETTER_MODE.get(letter, QueueMode.COLLECT),
                interrupted=interrupted,
            )
            if self._draining:  # drain began while this slot was being claimed
                await self._give_back(run)
                return
            if resumed:
                logger.info(
                    "lane.turn_resumed",
                    extra={"session_key": session, "event_id": entries[0].event_id},
                )
            if notice >= 0 and self._on_overflow is not None:
                self._spawn(self._notify(session, max(notice, 1)))
            await self._handle(run)
        except _UNAVAILABLE as exc:
            # The lease expires and a worker (maybe this one) resumes the turn.
            logger.warning(
                "lane.redis_unavailable",
                extra={"session_key": session, "worker": self.worker_id, "error": repr(exc)},
            )
            self._wake.set()
        except Exception:
            logger.exception("lane.turn_crashed", extra={"session_key": session})
            self._wake.set()
        finally:
            if self._running.get(session) is run:
                del self._running[session]
            run.turn = None
            run.settled.set()

    async def _handle(self, run: _Running) -> None:
        """Run the handler in a child task, then acknowledge (or give back) the turn.

        Interrupts, lost leases and drain cancel only the child, so this supervisor always
        decides what happens to the turn's messages.
        """
        assert self._handler is not None
        turn = run.turn
        assert turn is not None
        first = turn.all_messages[0]
        child: asyncio.Task[None] = asyncio.ensure_future(self._handler(turn))
        run.child = child
        try:
            await asyncio.wait({child})
        except asyncio.CancelledError:
            child.cancel()
            raise
        finally:
            run.child = None
        run.handled = True
        reason = run.cancel_reason
        if child.cancelled() and reason is not None:
            if reason == "lost":
                logger.warning("lane.lease_lost", extra={"session_key": run.session})
                return
            if reason == "interrupt":
                logger.info("lane.interrupted", extra={"session_key": run.session})
            await self._give_back(run)
            return
        exc = None if child.cancelled() else child.exception()
        if child.cancelled() or exc is not None:
            logger.error(
                "lane.turn_failed",
                exc_info=exc if exc is not None else True,
                extra={
                    "session_key": turn.session_key,
                    "event_id": first.event_id,
                    "channel": first.channel,
                },
            )
        res = await self._script(
            "S_ACK",
            self.session_keys(run.session),
            [run.token, self._config.debounce_ms, self._idle_ms],
        )
        removed, nxt = int(res[0]), str(res[1])
        if removed < 0:
            logger.warning(
                "lane.ack_refused",
                extra={"session_key": run.session, "event_id": first.event_id},
            )
            return
        if nxt == "i":
            self._touched.pop(run.session, None)
        delay = self._config.debounce_ms if nxt == "d" else 0
        self._running.pop(run.session, None)
        op = {"r": "r", "d": "d"}.get(nxt, "n")
        self._post(op, run.session, delay, queued=-removed, lanes=-1 if nxt == "i" else 0)

    async def _give_back(self, run: _Running) -> None:
        """Yield a turn without removing its messages and release its slot.

        The next turn carries them (interrupt) or resumes them (drain), here or in another
        worker.
        """
        ok = await self._scripts["S_YIELD"](keys=self.session_keys(run.session), args=[run.token])
        self._running.pop(run.session, None)
        if int(ok) >= 0:
            self._post("r", run.session)

    async def _try_ack(self, session: SessionKey, token: str) -> bool:
        """Acknowledge a turn by token (tests: a late ack of a dead worker is refused)."""
        res = await self._scripts["S_ACK"](
            keys=self.session_keys(session),
            args=[token, self._config.debounce_ms, self._idle_ms],
        )
        return int(res[0]) >= 0

    # --- heartbeats, pub/sub, notices ---------------------------------------------------------

    async def _heartbeats(self) -> None:
        """Every ``lease_s / 3``: extend this process's leases.

        Cancels turns whose lease was taken over (fenced) or that an interrupt asked to stop
        (a fallback for a lost pub/sub message).
        """
        interval = self._lease_s / 3.0
        while True:
            await asyncio.sleep(interval)
            runs = [r for r in self._running.values() if r.turn is not None]
            if not runs:
                continue
            try:
                results = await asyncio.gather(
                    *(
                        self._scripts["S_HEARTBEAT"](
                            keys=self.session_keys(r.session), args=[r.token, self._lease_ms]
                        )
                        for r in runs
                    )
                )
                alive = []
                for run, res in zip(runs, results, strict=True):
                    if int(res) < 0:
                        self._cancel(run, "lost")
                    else:
                        alive.append(run.session)
                        if int(res) == 1 and run.child is not None:
                            self._cancel(run, "interrupt")
                if alive:
                    await self._scripts["G_HEARTBEAT"](
                        keys=self._gkeys, args=[self._lease_ms, *alive]
                    )
            except _UNAVAILABLE as exc:
                logger.warning(
                    "lane.heartbeat_failed", extra={"worker": self.worker_id, "error": repr(exc)}
                )
            except Exception:
                logger.exception("lane.heartbeat_failed", extra={"worker": self.worker_id})

    async def _sweeper(self) -> None:
        """Task boundary: every ``sweep_s`` seconds, one bounded sweep round (see ``sweep``)."""
        cursors: dict[str, int] = {}
        failures = 0
        while True:
            await asyncio.sleep(self._sweep_s if not failures else self._backoff.compute(failures))
            try:
                cursors, _ = await self.sweep(cursors)
                failures = 0
            except Exception as exc:
                failures += 1
                cursors = {}
                if _unavailable(exc):
                    logger.warning(
                        "lane.sweep_failed", extra={"worker": self.worker_id, "error": repr(exc)}
                    )
                else:
                    logger.exception("lane.sweep_failed", extra={"worker": self.worker_id})

    async def sweep(self, cursors: dict[str, int] | None = None) -> tuple[dict[str, int], int]:
        """One sweeper round: re-add lost sessions to the ready zset.

        ``SCAN`` (one call per node, ``COUNT sweep_batch``) continues from ``cursors`` over
        the session hashes; ``S_STUCK`` (one script per session, atomic on its slot) picks those
        with messages that have been ready or in a quiet window for ``sweep_age_s`` or whose
        lease expired that long ago; ``G_SWEEP`` re-adds those that no global structure
        (ready, delayed, slots, held) holds. A session re-added by mistake costs one empty
        claim, never a duplicate turn (``S_BEGIN`` decides from the session's own state).

        Args:
            cursors: the ``SCAN`` cursor per node name of the previous round (``{}``: start).

        Returns:
            The cursors to continue from (``{}`` once every node was scanned through) and the
            number of sessions re-added.

        Raises:
            redis.exceptions.RedisError, OSError: when Redis cannot be reached.
        """
        pattern = "{" + self._prefix + ":*}:h"
        count = self._sweep_batch
        keys: list[Any] = []
        nxt: dict[str, int] = {}
        if isinstance(self._redis, RedisCluster):
            cluster = self._redis
            # The cluster client answers SCAN with ({node name: cursor}, keys).
            got: Any
            if not cursors:
                got, keys = await cluster.scan(0, match=pattern, count=count)
                nxt = {str(k): int(v) for k, v in got.items()}
            for name, cursor in (cursors or {}).items():
                node = cluster.get_node(node_name=name)
                if node is None:
                    continue
                got, found = await cluster.scan(
                    cursor, match=pattern, count=count, target_nodes=node
                )
                keys += found
                nxt[name] = int(got[name])
        else:
            cursor, keys = await self._redis.scan(
                (cursors or {}).get("", 0), match=pattern, count=count
            )
            nxt = {"": int(cursor)}
        nxt = {k: v for k, v in nxt.items() if v != 0}
        tags = [str(k)[: -len(":h")] for k in keys]
        if not tags:
            return nxt, 0
        results = await asyncio.gather(
            *(
                self._scripts["S_STUCK"](keys=[f"{tag}:q", f"{tag}:h"], args=[self._sweep_age_ms])
                for tag in tags
            ),
            return_exceptions=True,
        )
        lead = len(self._prefix) + 2  # "{P:"
        sessions: list[str] = []
        for tag, res in zip(tags, results, strict=True):
            if isinstance(res, BaseException):
                if _unavailable(res):
                    raise res
                continue  # not a lane hash (a key that only looks like one)
            if int(res[0]) != 1:
                continue
            named = str(res[2])
            session = named or tag[lead:-1]
            if not named and session.startswith("#"):
                continue  # a digest tag without its name (written by an older version)
            sessions.append(session)
        if not sessions:
            return nxt, 0
        added = await self._scripts["G_SWEEP"](keys=self._gkeys, args=[self.channel, *sessions])
        for session in added:
            logger.warning(
                "lane.swept", extra={"session_key": str(session), "worker": self.worker_id}
            )
        self.swept += len(added)
        if added:
            self._wake.set()
        return nxt, len(added)

    def _on_subscribed(self, up: bool) -> None:
        """Subscription state: wake the global loop once subscribed (wake-ups may be lost)."""
        if up:
            self._wake.set()

    def _on_message(self, data: str) -> None:
        if data == "r":
            self._wake.set()
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        kind = event.get("t")
        if kind == "c" and event.get("w") == self.worker_id:
            run = self._running.get(SessionKey(event.get("s", "")))
            if run is not None and run.token == event.get("k") and run.child is not None:
                self._cancel(run, "interrupt")
        elif kind == "o" and self._on_overflow is not None:
            self._spawn(self._take_notice(SessionKey(event.get("s", ""))))

    async def _request_cancel(self, session: SessionKey, owner: str, token: str) -> None:
        """Interrupt the running turn of ``session``, here or in its owner's process."""
        run = self._running.get(session)
        if owner == self.worker_id:
            if run is not None and run.token == token and run.child is not None:
                self._cancel(run, "interrupt")
            return
        await self._publish({"t": "c", "w": owner, "s": session, "k": token})

    @staticmethod
    def _cancel(run: _Running, reason: str) -> None:
        """Cancel the handler of ``run`` (only while it runs)."""
        if run.cancel_reason is None and run.child is not None and not run.child.done():
            run.cancel_reason = reason
            run.child.cancel()

    async def _publish(self, event: dict[str, str]) -> None:
        try:
            await self._redis.publish(self.channel, json.dumps(event))
        except _UNAVAILABLE as exc:
            # The heartbeat (interrupts) or the next turn (notices) catches up.
            logger.warning("lane.publish_failed", extra={"error": repr(exc)})

    async def _take_notice(self, session: SessionKey) -> None:
        """Task boundary: take the session's open overflow notice (once across processes)."""
        try:
            n = int(await self._scripts["S_NOTICE"](keys=self.session_keys(session)))
        except Exception:
            logger.exception("lane.overflow_notice_failed", extra={"session_key": session})
            return
        if n >= 0:
            await self._notify(session, max(n, 1))

    async def _notify(self, session: SessionKey, n: int) -> None:
        assert self._on_overflow is not None
        try:
            await self._on_overflow(session, n)
        except Exception:
            logger.exception("lane.overflow_notice_failed", extra={"session_key": session})

    # --- helpers ------------------------------------------------------------------------------

    def _take_snapshot(self, values: list[Any]) -> None:
        snap = (int(values[0]), int(values[1]), int(values[2]), int(values[3]))
        if snap[0] > self._snapshot[0] or snap[0] < self._snapshot[0] - 1_000_000:
            self._snapshot = snap

    def _touch(self, session: SessionKey) -> None:
        touched = self._touched
        touched.pop(session, None)
        touched[session] = None
        if len(touched) > 100_000:
            del touched[next(iter(touched))]

    def _spawn(self, coro: Awaitable[_T]) -> None:
        async def boundary() -> None:
            try:
                await coro
            except _UNAVAILABLE as exc:
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
        except _UNAVAILABLE as exc:
            logger.warning("lane.redis_unavailable", extra={"error": repr(exc)})
            return []
        return [InboundMessage.model_validate_json(e[1:]) for entries in lists for e in entries]

    @staticmethod
    async def _stop_task(task: asyncio.Task[None] | None) -> None:
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=_CANCEL_GRACE_S)

    async def _die(self) -> None:
        """Tests only: stop like a killed process (no ack, no yield, no heartbeat)."""
        self._draining = True
        tasks = (self._loop_task, self._hb_task, self._sub_task, self._sweep_task)
        pending = {t for t in tasks if t}
        pending |= {r.task for r in self._running.values() if r.task is not None}
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_CANCEL_GRACE_S)
        self._closed = True
        await self._redis.aclose()
