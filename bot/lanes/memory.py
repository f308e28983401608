"""The embedded, in-process lane backend (one process, no I/O).

:class:`MemoryLaneQueue` keeps one small :class:`_Lane` per session that has work, a FIFO of
ready sessions, and a counter of running turns. Nothing runs for a session while it is idle:
timers (debounce, reclamation) are ``loop.call_at`` handles, and one :class:`asyncio.Task`
exists per *running* turn only. ``enqueue`` is O(1).

A lane moves through four states::

    IDLE ──msg──▶ READY ──slot──▶ RUNNING ──done──▶ READY     (followup / interrupt next)
      ▲                                        ├──▶ DEBOUNCE  (collect next) ──quiet──▶ READY
      └─────────────── lane_idle_s ◀───────────┴──▶ IDLE      (nothing waiting)

``READY`` sessions sit in one FIFO and take turn slots in the order they became ready; a
session that just finished a turn goes to its back, so a busy session cannot starve others.

``purge`` (data-subject erasure, in the process that holds the lanes) filters a lane's waiting
messages, folded overflow and carried (interrupted) turn, never its running turn; a lane left
empty leaves the ready FIFO and is forgotten at once (a running one goes idle when its turn
ends). It keeps the invariants ``_take_turn`` relies on: a carried turn keeps at least one
message, and overflow never waits without a waiting message behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from bot.config import QueueMode
from bot.envelope import InboundMessage, SessionKey
from bot.lanes.base import (
    CANCEL_GRACE_S,
    LaneConfig,
    LaneLifecycle,
    LanePurge,
    LaneSelection,
    LaneStats,
    OverflowHandler,
    QueuedEntry,
    Turn,
    TurnHandler,
)

logger = logging.getLogger(__name__)

_IDLE: Final = 0
_DEBOUNCE: Final = 1
_READY: Final = 2
_RUNNING: Final = 3


class _Episode:
    """One overflow episode of a lane: how many messages were folded so far."""

    __slots__ = ("folded",)

    def __init__(self) -> None:
        self.folded = 0


class _Lane:
    """The state of one session that has work (or had some less than ``lane_idle_s`` ago)."""

    __slots__ = (
        "carry",
        "episode",
        "key",
        "overflow",
        "quiet_since",
        "running",
        "state",
        "task",
        "timer",
        "timer_due",
        "waiting",
    )

    def __init__(self, key: SessionKey) -> None:
        self.key = key
        self.state: int = _IDLE
        # Messages not yet given to a turn, oldest first, each with its queue mode.
        self.waiting: deque[tuple[InboundMessage, QueueMode]] = deque()
        # The oldest waiting messages folded beyond lane_cap (newer than ``carry``).
        self.overflow: list[InboundMessage] = []
        # The turn cancelled by an ``interrupt`` message; the next turn carries it.
        self.carry: Turn | None = None
        # The turn now running (None once an interrupt moved it to ``carry``).
        self.running: Turn | None = None
        self.task: asyncio.Task[None] | None = None
        # Debounce (state DEBOUNCE) or reclamation (state IDLE) timer.
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due = 0.0
        # Loop time of the last message or of the end of the last turn (collect quiet window).
        self.quiet_since = 0.0
        self.episode: _Episode | None = None

    def pending(self) -> int:
        """Messages of this lane that no running turn holds."""
        carried = len(self.carry.messages) + len(self.carry.overflow) if self.carry else 0
        return len(self.waiting) + len(self.overflow) + carried

    def unhandled(self) -> list[InboundMessage]:
        """Every message not handled yet, oldest first (running turn included)."""
        out: list[InboundMessage] = []
        if self.running is not None:
            out += self.running.all_messages
        if self.carry is not None:
            out += self.carry.all_messages
        out += self.overflow
        out += (m for m, _ in self.waiting)
        return out


_LaneCallback = Callable[[_Lane], None]


class MemoryLaneQueue:
    """In-process :class:`bot.lanes.base.LaneQueue` (see that module for the semantics).

    Args:
        config: caps, debounce window and idle time (:class:`LaneConfig`).

    Raises:
        ValueError: when ``max_concurrent_turns`` or ``lane_cap`` is below 1, or
            ``debounce_ms``/``lane_idle_s`` is negative.
    """

    def __init__(self, config: LaneConfig) -> None:
        config.check()
        self._config = config
        self._debounce_s = config.debounce_ms / 1000.0
        self._lanes: dict[SessionKey, _Lane] = {}
        self._ready: deque[_Lane] = deque()
        self._active = 0
        self._queued = 0
        self._life = LaneLifecycle()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notices: set[asyncio.Task[None]] = set()

    # --- public API ---------------------------------------------------------------------------

    async def start(self, handler: TurnHandler, on_overflow: OverflowHandler) -> None:
        """Start consuming; messages enqueued before ``start`` wait for it.

        Args:
            handler: runs one turn (see :data:`bot.lanes.base.TurnHandler`).
            on_overflow: told once per overflow episode (see :data:`OverflowHandler`).

        Raises:
            RuntimeError: when already started.
            bot.errors.Draining: when the queue was drained or closed.
        """
        self._life.start(handler, on_overflow)
        self._loop = asyncio.get_running_loop()
        self._pump()

    async def enqueue(self, msg: InboundMessage, mode: QueueMode) -> int:
        """Append ``msg`` to its session's lane; O(1).

        Args:
            msg: the message (already deduplicated and persisted by the hub).
            mode: the queue mode to schedule it under.

        Returns:
            Messages of that session waiting for a turn after this call (0 when its turn
            started at once); at most ``lane_cap`` plus what overflow folded.

        Raises:
            bot.errors.Draining: when the queue is draining or closed.
        """
        self._life.check_open()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        key = msg.session_key
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
        elif lane.task is not None and lane.task.done():
            # The turn ended but its done callback has not run yet: the lane is not busy.
            self._turn_done(lane, lane.task)
        now = loop.time()
        lane.quiet_since = now
        waiting = lane.waiting
        waiting.append((msg, mode))
        self._queued += 1
        if len(waiting) > self._config.lane_cap:
            self._fold(lane)

        state = lane.state
        if state == _IDLE:
            self._cancel_timer(lane)  # the reclamation timer
            self._make_ready(lane)
        elif mode is QueueMode.INTERRUPT:
            if state == _DEBOUNCE:
                self._cancel_timer(lane)
                self._make_ready(lane)
            elif state == _RUNNING and lane.running is not None:
                self._interrupt(lane)
        return lane.pending()

    async def drain(self, timeout_s: float) -> list[InboundMessage]:
        """Stop starting turns and hand back every message not handled.

        Waits up to ``timeout_s`` seconds for running turns, then cancels those still running
        (their messages count as not handled). Turns that finished, even by raising, count as
        handled. Afterwards the queue holds nothing and ``enqueue`` raises ``Draining``.

        Args:
            timeout_s: seconds to wait for running turns.

        Returns:
            The messages not handled, oldest first per session (sessions in the order their
            lanes were created). The caller owns them.
        """
        self._life.draining = True
        self._ready.clear()
        for lane in self._lanes.values():
            self._cancel_timer(lane)
        running = {lane.task: lane for lane in self._lanes.values() if lane.task is not None}
        cancelled = 0
        if running:
            done, still = await asyncio.wait(running, timeout=max(timeout_s, 0.0))
            for task in done:
                # Finished in time (even by raising): handled.
                running[task].running = None
            if still:
                cancelled = len(still)
                for task in still:
                    task.cancel()
                await self._unwind(still)
        # A turn cancelled above keeps ``running``, so its messages are returned.
        unhandled: list[InboundMessage] = []
        for lane in self._lanes.values():
            unhandled += lane.unhandled()
        self._lanes.clear()
        self._queued = 0
        logger.info(
            "lane.drained", extra={"unhandled": len(unhandled), "cancelled_turns": cancelled}
        )
        return unhandled

    def stats(self) -> LaneStats:
        """A snapshot of sizes; O(1)."""
        return LaneStats(
            lanes=len(self._lanes),
            queued=self._queued,
            active_turns=self._active,
            ready_sessions=len(self._ready),
        )

    async def close(self) -> None:
        """Cancel running turns, overflow notices and timers, and forget every lane.

        Messages still queued are discarded: call :meth:`drain` first to keep them.
        """
        if not self._life.draining:
            await self.drain(0.0)
        self._life.closed = True
        if self._notices:
            for task in self._notices:
                task.cancel()
            await self._unwind(set(self._notices))

    # --- data-subject requests ----------------------------------------------------------------

    async def queued(self, select: LaneSelection) -> list[QueuedEntry]:
        """The messages ``select`` is about, running turns' included (no I/O)."""
        out: list[QueuedEntry] = []
        for lane in self._lanes.values():
            running = len(lane.running.all_messages) if lane.running is not None else 0
            for i, msg in enumerate(lane.unhandled()):  # the running turn's first
                match, _ = select.match(msg)
                if match != "other":
                    out.append(QueuedEntry(msg, match, i < running))
        return out

    async def purge(self, select: LaneSelection, *, final: bool = False) -> LanePurge:
        """Filter every lane (see the module docstring); ``final`` changes nothing here."""
        removed = scrubbed = dropped = in_flight = 0
        for key, lane in list(self._lanes.items()):
            if lane.running is not None:
                in_flight += sum(select.match(m)[0] != "other" for m in lane.running.all_messages)
            r, s = self._filter(lane, select)
            removed, scrubbed = removed + r, scrubbed + s
            self._queued -= r
            if lane.pending() or lane.task is not None or not (r or key in select.sessions):
                continue  # work left, or a turn runs (the lane goes idle when it ends)
            if lane.state == _READY:
                self._ready.remove(lane)
            self._cancel_timer(lane)
            del self._lanes[key]
            dropped += 1
        return LanePurge(removed, scrubbed, dropped, in_flight)

    def _filter(self, lane: _Lane, select: LaneSelection) -> tuple[int, int]:
        """Drop the subject's messages from ``lane`` (not its running turn), scrub the rest."""
        removed = scrubbed = 0

        def keep(msg: InboundMessage) -> InboundMessage | None:
            nonlocal removed, scrubbed
            match, new = select.match(msg)
            removed += match == "theirs"
            scrubbed += match == "mentions"
            return None if match == "theirs" else new

        waiting = [(keep(m), mode) for m, mode in lane.waiting]
        lane.waiting = deque((m, mode) for m, mode in waiting if m is not None)
        lane.overflow = [k for k in map(keep, lane.overflow) if k is not None]
        carry = lane.carry
        if carry is not None:
            messages = [k for k in map(keep, carry.messages) if k is not None]
            overflow = [k for k in map(keep, carry.overflow) if k is not None]
            if messages:
                lane.carry = replace(carry, messages=messages, overflow=overflow)
            else:  # a turn needs a message: what is left of it is plain overflow now
                lane.carry = None
                lane.overflow = [*overflow, *lane.overflow]
        if lane.carry is None and lane.overflow and not lane.waiting:
            lane.waiting.append((lane.overflow.pop(), QueueMode.COLLECT))
        return removed, scrubbed

    # --- scheduling ---------------------------------------------------------------------------

    def _make_ready(self, lane: _Lane) -> None:
        lane.state = _READY
        self._ready.append(lane)
        if self._active < self._config.max_concurrent_turns:
            self._pump()

    def _pump(self) -> None:
        """Start turns for ready sessions while slots are free (oldest ready first)."""
        if not self._life.consuming:
            return
        cap = self._config.max_concurrent_turns
        ready = self._ready
        while ready and self._active < cap:
            self._start_turn(ready.popleft())

    def _start_turn(self, lane: _Lane) -> None:
        turn = self._take_turn(lane)
        self._queued -= len(turn.messages) + len(turn.overflow)
        lane.state = _RUNNING
        lane.running = turn
        self._active += 1
        assert self._loop is not None
        task = self._loop.create_task(self._run(turn))
        lane.task = task
        task.add_done_callback(lambda t: self._turn_done(lane, t))

    def _take_turn(self, lane: _Lane) -> Turn:
        """Remove the next turn's messages from ``lane``.

        After an interrupt the turn takes everything (the cancelled turn's messages first);
        otherwise a ``followup`` head is a turn of its own and a ``collect``/``interrupt`` head
        takes every following message up to the next ``followup`` one. Folded overflow always
        goes with the next turn.
        """
        waiting = lane.waiting
        overflow = lane.overflow
        lane.overflow = []
        lane.episode = None
        carry = lane.carry
        if carry is not None:
            lane.carry = None
            messages = [*carry.messages, *overflow, *(m for m, _ in waiting)]
            waiting.clear()
            return Turn(
                lane.key,
                messages,
                overflow=carry.overflow,
                mode=QueueMode.INTERRUPT,
                interrupted=True,
            )
        msg, mode = waiting.popleft()
        messages = [msg]
        if mode is not QueueMode.FOLLOWUP:
            while waiting and waiting[0][1] is not QueueMode.FOLLOWUP:
                messages.append(waiting.popleft()[0])
        return Turn(lane.key, messages, overflow=overflow, mode=mode)

    async def _run(self, turn: Turn) -> None:
        """Task boundary of one turn: a handler error is logged, never propagated."""
        assert self._life.handler is not None
        try:
            await self._life.handler(turn)
        except Exception:
            first = turn.messages[0]
            logger.exception(
                "lane.turn_failed",
                extra={
                    "session_key": turn.session_key,
                    "event_id": first.event_id,
                    "channel": first.channel,
                },
            )

    def _turn_done(self, lane: _Lane, task: asyncio.Task[None]) -> None:
        if lane.task is not task:
            return  # already accounted for (by ``enqueue``)
        self._active -= 1
        lane.task = None
        if self._life.draining:
            return  # drain() decides what was handled
        lane.running = None
        assert self._loop is not None
        now = self._loop.time()
        lane.quiet_since = now
        if lane.carry is not None:
            self._make_ready(lane)
        elif lane.waiting:
            if lane.waiting[0][1] is QueueMode.COLLECT and self._debounce_s > 0:
                lane.state = _DEBOUNCE
                self._set_timer(lane, now + self._debounce_s, self._debounce_fired)
            else:
                self._make_ready(lane)
        else:
            lane.state = _IDLE
            self._set_timer(lane, now + self._config.lane_idle_s, self._reclaim)
        self._pump()

    def _debounce_fired(self, lane: _Lane) -> None:
        lane.timer = None
        if lane.state != _DEBOUNCE or self._life.draining:
            return
        due = lane.quiet_since + self._debounce_s
        if due > lane.timer_due:
            # A message arrived since the timer was set: the quiet window restarts from it.
            self._set_timer(lane, due, self._debounce_fired)
            return
        self._make_ready(lane)

    def _reclaim(self, lane: _Lane) -> None:
        lane.timer = None
        if lane.state == _IDLE and not lane.waiting and self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]

    def _set_timer(self, lane: _Lane, when: float, callback: _LaneCallback) -> None:
        assert self._loop is not None
        lane.timer_due = when
        lane.timer = self._loop.call_at(when, callback, lane)

    @staticmethod
    def _cancel_timer(lane: _Lane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None

    # --- overflow and interrupt ---------------------------------------------------------------

    def _fold(self, lane: _Lane) -> None:
        """Move the oldest waiting messages beyond ``lane_cap`` to the lane's overflow."""
        cap = self._config.lane_cap
        waiting = lane.waiting
        episode = lane.episode
        new_episode = episode is None
        if episode is None:
            episode = lane.episode = _Episode()
        while len(waiting) > cap:
            lane.overflow.append(waiting.popleft()[0])
            episode.folded += 1
        if new_episode:
            logger.info("lane.overflow", extra={"session_key": lane.key, "lane_cap": cap})
            if self._life.on_overflow is not None and self._loop is not None:
                task = self._loop.create_task(self._notify_overflow(lane.key, episode))
                self._notices.add(task)
                task.add_done_callback(self._notices.discard)

    async def _notify_overflow(self, key: SessionKey, episode: _Episode) -> None:
        """Task boundary of one overflow notice; ``n`` is the count folded when it runs."""
        assert self._life.on_overflow is not None
        try:
            await self._life.on_overflow(key, episode.folded)
        except Exception:
            logger.exception("lane.overflow_notice_failed", extra={"session_key": key})

    def _interrupt(self, lane: _Lane) -> None:
        """Cancel the running turn; its messages go first into the next turn."""
        assert lane.task is not None
        carry = lane.carry = lane.running
        assert carry is not None
        lane.running = None
        self._queued += len(carry.messages) + len(carry.overflow)
        lane.task.cancel()
        logger.info("lane.interrupted", extra={"session_key": lane.key})

    async def _unwind(self, tasks: set[asyncio.Task[None]]) -> None:
        """Wait (bounded) for cancelled tasks to finish unwinding."""
        _, stuck = await asyncio.wait(tasks, timeout=CANCEL_GRACE_S)
        if stuck:
            logger.warning("lane.turn_stuck", extra={"tasks": len(stuck)})
