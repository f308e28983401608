"""The turns this process runs: one per claimed slot, from its begin to its ack or give-back.

A claim (from :class:`bot.lanes.redis.global_loop.GlobalLoop`) holds a global slot; its
``S_BEGIN`` takes the session's lease (a fencing token) and the turn's messages, which stay at
the head of the session's list until ``S_ACK`` removes them once the handler returned. The
handler runs in a child task so that an interrupt, a lost lease or a drain cancels only the
handler and this module decides what becomes of the messages: acknowledged, given back
(``S_YIELD``: the next turn carries or resumes them, here or in another worker) or left to
the lease's expiry (lost lease). Heartbeats extend the leases every ``lease_s / 3``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.config import QueueMode
from bot.envelope import InboundMessage, SessionKey
from bot.lanes.base import LaneConfig, LaneLifecycle, Turn
from bot.lanes.redis.batcher import LaneScripts
from bot.lanes.redis.client import UNAVAILABLE
from bot.lanes.redis.keys import LaneKeys
from bot.lanes.redis.scripts import LETTER_MODE

logger = logging.getLogger("bot.lanes.redis")


@dataclass(slots=True)
class Running:
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
        """Messages of the running turn (0 before its begin answered)."""
        return len(self.turn.all_messages) if self.turn is not None else 0


class TouchedSessions:
    """The sessions this process enqueued to or ran, oldest first (at most 100,000).

    ``drain`` returns their unhandled messages.
    """

    def __init__(self) -> None:
        self._sessions: dict[SessionKey, None] = {}

    def add(self, session: SessionKey) -> None:
        """Note ``session`` as the newest one."""
        sessions = self._sessions
        sessions.pop(session, None)
        sessions[session] = None
        if len(sessions) > 100_000:
            del sessions[next(iter(sessions))]

    def discard(self, session: SessionKey) -> None:
        """Forget ``session`` (its lane went idle)."""
        self._sessions.pop(session, None)

    def __iter__(self) -> Iterator[SessionKey]:
        return iter(self._sessions)


class Post(Protocol):
    """Queues one operation for the global loop (:meth:`GlobalLoop.post`)."""

    def __call__(
        self, op: str, session: str, delay_ms: int = 0, queued: int = 0, lanes: int = 0
    ) -> None:
        """Queue ``op`` for ``session`` with counter deltas."""


Spawn = Callable[[Awaitable[Any]], None]
"""Runs a coroutine in a background task that logs its errors."""


class TurnRunner:
    """Runs the turns of the slots this process claimed (see the module docstring).

    Args:
        scripts: the lane scripts.
        keys: the key names.
        config: the lane settings (``debounce_ms``, ``lane_idle_s``).
        life: the queue's lifecycle (handlers, draining).
        wake: set to wake the global loop.
        post: queues pushes and releases for the global loop.
        spawn: runs overflow notices in the background.
        touched: the sessions this process touched (updated here).
        worker_id: this process's name in leases and logs.
        lease_s: seconds a lease lasts without a heartbeat.
        local_turns: turns this process runs at once.

    Attributes:
        running: the slots this process holds, by session.
    """

    def __init__(
        self,
        scripts: LaneScripts,
        keys: LaneKeys,
        config: LaneConfig,
        life: LaneLifecycle,
        wake: asyncio.Event,
        *,
        post: Post,
        spawn: Spawn,
        touched: TouchedSessions,
        worker_id: str,
        lease_s: float,
        local_turns: int,
    ) -> None:
        self._scripts = scripts
        self._keys = keys
        self._config = config
        self._life = life
        self._wake = wake
        self._post = post
        self._spawn = spawn
        self._touched = touched
        self._worker_id = worker_id
        self._lease_s = lease_s
        self.lease_ms = max(int(lease_s * 1000), 1)
        """The lease of a turn, milliseconds."""
        self._idle_ms = int(config.lane_idle_s * 1000)
        self._local_turns = local_turns
        self.running: dict[SessionKey, Running] = {}

    # --- the global loop's consumer -----------------------------------------------------------

    @property
    def consuming(self) -> bool:
        """Whether turns may be claimed now (started and not draining)."""
        return self._life.consuming

    def free_turns(self) -> int:
        """How many more turns this process may run now."""
        return max(self._local_turns - len(self.running), 0)

    def launch(self, claims: list[tuple[SessionKey, str]]) -> None:
        """Start the turns of one claim batch of ``(session, fencing token)``.

        Their begins go out together and their handlers start together once every begin
        answered.
        """
        runs: list[Running] = []
        for session, token in claims:
            if session in self.running or self._life.draining:
                # Cannot happen with one slot per session; give the slot back to be safe.
                logger.warning("lane.duplicate_claim", extra={"session_key": session})
                self._post("r", session)
                continue
            run = Running(session, token)
            self.running[session] = run
            runs.append(run)
        if not runs:
            return
        loop = asyncio.get_running_loop()
        begins = asyncio.gather(*(self._begin(r) for r in runs), return_exceptions=True)
        for i, run in enumerate(runs):
            run.task = loop.create_task(self._turn(run, begins, i))

    # --- one turn -----------------------------------------------------------------------------

    async def _begin(self, run: Running) -> list[Any]:
        res: list[Any] = await self._scripts.batched(
            "S_BEGIN",
            self._keys.session(run.session),
            [run.token, self._worker_id, self.lease_ms, self._config.debounce_ms],
        )
        return res

    async def _turn(
        self, run: Running, begins: asyncio.Future[list[list[Any] | BaseException]], i: int
    ) -> None:
        """Task boundary of one claimed slot: begin, handle, ack, release (and claim next)."""
        session = run.session
        try:
            res = (await asyncio.shield(begins))[i]
            if isinstance(res, BaseException):
                raise res  # noqa: TRY301 - the batch's begin failed for this session
            kind = res[0]
            if kind != "t":
                self.running.pop(session, None)
                if kind == "e":
                    self._post("n", session)
                else:  # 'b' another live lease, 'l' quiet window: come back later
                    self._post("d", session, int(res[1]) + 1)
                return
            self._touched.add(session)
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
                mode=LETTER_MODE.get(letter, QueueMode.COLLECT),
                interrupted=interrupted,
            )
            if self._life.draining:  # drain began while this slot was being claimed
                await self.give_back(run)
                return
            if resumed:
                logger.info(
                    "lane.turn_resumed",
                    extra={"session_key": session, "event_id": entries[0].event_id},
                )
            if notice >= 0 and self._life.on_overflow is not None:
                self._spawn(self.notify(session, max(notice, 1)))
            await self._handle(run)
        except UNAVAILABLE as exc:
            # The lease expires and a worker (maybe this one) resumes the turn.
            logger.warning(
                "lane.redis_unavailable",
                extra={"session_key": session, "worker": self._worker_id, "error": repr(exc)},
            )
            self._wake.set()
        except Exception:
            logger.exception("lane.turn_crashed", extra={"session_key": session})
            self._wake.set()
        finally:
            if self.running.get(session) is run:
                del self.running[session]
            run.turn = None
            run.settled.set()

    async def _handle(self, run: Running) -> None:
        """Run the handler in a child task, then acknowledge (or give back) the turn.

        Interrupts, lost leases and drain cancel only the child, so this supervisor always
        decides what happens to the turn's messages.
        """
        handler = self._life.handler
        assert handler is not None
        turn = run.turn
        assert turn is not None
        first = turn.all_messages[0]
        child: asyncio.Task[None] = asyncio.ensure_future(handler(turn))
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
            await self.give_back(run)
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
        res = await self._scripts.batched(
            "S_ACK",
            self._keys.session(run.session),
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
            self._touched.discard(run.session)
        delay = self._config.debounce_ms if nxt == "d" else 0
        self.running.pop(run.session, None)
        op = {"r": "r", "d": "d"}.get(nxt, "n")
        self._post(op, run.session, delay, queued=-removed, lanes=-1 if nxt == "i" else 0)

    async def give_back(self, run: Running) -> None:
        """Yield a turn without removing its messages and release its slot.

        The next turn carries them (interrupt) or resumes them (drain), here or in another
        worker.

        Raises:
            redis.exceptions.RedisError, OSError: when Redis cannot be reached.
        """
        ok = await self._scripts.run("S_YIELD", self._keys.session(run.session), [run.token])
        self.running.pop(run.session, None)
        if int(ok) >= 0:
            self._post("r", run.session)

    async def try_ack(self, session: SessionKey, token: str) -> bool:
        """Acknowledge a turn by token (tests: a late ack of a dead worker is refused).

        Raises:
            redis.exceptions.RedisError, OSError: when Redis cannot be reached.
        """
        res = await self._scripts.run(
            "S_ACK",
            self._keys.session(session),
            [token, self._config.debounce_ms, self._idle_ms],
        )
        return int(res[0]) >= 0

    # --- cancelling and leases ----------------------------------------------------------------

    @staticmethod
    def cancel(run: Running, reason: str) -> None:
        """Cancel the handler of ``run`` (only while it runs)."""
        if run.cancel_reason is None and run.child is not None and not run.child.done():
            run.cancel_reason = reason
            run.child.cancel()

    def interrupt(self, session: SessionKey, token: object) -> None:
        """Cancel the handler of this process's turn of ``session`` if it holds ``token``."""
        run = self.running.get(session)
        if run is not None and run.token == token and run.child is not None:
            self.cancel(run, "interrupt")

    async def heartbeats(self) -> None:
        """Task boundary: every ``lease_s / 3``, extend this process's leases.

        Cancels turns whose lease was taken over (fenced) or that an interrupt asked to stop
        (a fallback for a lost pub/sub message).
        """
        interval = self._lease_s / 3.0
        while True:
            await asyncio.sleep(interval)
            runs = [r for r in self.running.values() if r.turn is not None]
            if not runs:
                continue
            try:
                results = await asyncio.gather(
                    *(
                        self._scripts.run(
                            "S_HEARTBEAT", self._keys.session(r.session), [r.token, self.lease_ms]
                        )
                        for r in runs
                    )
                )
                alive = []
                for run, res in zip(runs, results, strict=True):
                    if int(res) < 0:
                        self.cancel(run, "lost")
                    else:
                        alive.append(run.session)
                        if int(res) == 1 and run.child is not None:
                            self.cancel(run, "interrupt")
                if alive:
                    await self._scripts.run(
                        "G_HEARTBEAT", self._keys.global_keys, [self.lease_ms, *alive]
                    )
            except UNAVAILABLE as exc:
                logger.warning(
                    "lane.heartbeat_failed", extra={"worker": self._worker_id, "error": repr(exc)}
                )
            except Exception:
                logger.exception("lane.heartbeat_failed", extra={"worker": self._worker_id})

    # --- overflow notices ---------------------------------------------------------------------

    async def take_notice(self, session: SessionKey) -> None:
        """Task boundary: take the session's open overflow notice (once across processes)."""
        try:
            n = int(await self._scripts.run("S_NOTICE", self._keys.session(session)))
        except Exception:
            logger.exception("lane.overflow_notice_failed", extra={"session_key": session})
            return
        if n >= 0:
            await self.notify(session, max(n, 1))

    async def notify(self, session: SessionKey, n: int) -> None:
        """Task boundary: tell the overflow handler that ``n`` messages of ``session`` folded."""
        on_overflow = self._life.on_overflow
        assert on_overflow is not None
        try:
            await on_overflow(session, n)
        except Exception:
            logger.exception("lane.overflow_notice_failed", extra={"session_key": session})
