"""Backend-independent helpers of the lane contract suite: messages and a recording handler."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.envelope import InboundMessage, Participant, SessionKey, session_key
from bot.lanes.base import Turn

CHANNEL = "test"
ACCOUNT = "acct"


def key(session: str) -> SessionKey:
    """The session key of test session ``session``."""
    return session_key(CHANNEL, ACCOUNT, dm_peer=session)


def msg(session: str, n: int, text: str | None = None) -> InboundMessage:
    """Message number ``n`` of test session ``session`` (event id ``{session}-{n}``)."""
    return InboundMessage(
        event_id=f"{session}-{n}",
        channel=CHANNEL,
        account=ACCOUNT,
        session_key=key(session),
        sender=Participant(id=session),
        text=text if text is not None else f"{session} says {n}",
    )


def ids(messages: list[InboundMessage]) -> list[str]:
    """Event ids of ``messages``, in order."""
    return [m.event_id for m in messages]


@dataclass
class Recorder:
    """A turn handler (``handle``) and overflow handler (``on_overflow``) that record calls.

    Turns of sessions in ``hold`` (or every turn with ``hold_all``) wait in the handler until
    ``release(session)`` is called. ``fail`` makes chosen turns raise after their hold.
    ``rng`` adds 0 to ``jitter`` random yields to every turn (interleaving tests).
    """

    hold: set[SessionKey] = field(default_factory=set)
    hold_all: bool = False
    fail: Callable[[Turn], bool] | None = None
    rng: random.Random | None = None
    jitter: int = 3
    started: list[Turn] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    finished: list[Turn] = field(default_factory=list)
    failed: list[Turn] = field(default_factory=list)
    cancelled: list[Turn] = field(default_factory=list)
    overflows: list[tuple[SessionKey, int]] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    max_per_session: int = 0
    _per_session: dict[SessionKey, int] = field(default_factory=dict)
    _gates: dict[SessionKey, asyncio.Event] = field(default_factory=dict)
    _tick: asyncio.Event = field(default_factory=asyncio.Event)

    def _changed(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def handle(self, turn: Turn) -> None:
        """The turn handler under test."""
        k = turn.session_key
        self.started.append(turn)
        self.started_at.append(asyncio.get_running_loop().time())
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self._per_session[k] = self._per_session.get(k, 0) + 1
        self.max_per_session = max(self.max_per_session, self._per_session[k])
        gate = self._gates[k] = asyncio.Event()
        self._changed()
        try:
            if self.hold_all or k in self.hold:
                await gate.wait()
            if self.rng is not None:
                for _ in range(self.rng.randint(0, self.jitter)):
                    await asyncio.sleep(0)
            if self.fail is not None and self.fail(turn):
                self.failed.append(turn)
                raise RuntimeError(f"turn of {k} failed on purpose")
            self.finished.append(turn)
        except asyncio.CancelledError:
            self.cancelled.append(turn)
            raise
        finally:
            self.running -= 1
            self._per_session[k] -= 1
            self._changed()

    async def on_overflow(self, session: SessionKey, n: int) -> None:
        """The overflow handler under test."""
        self.overflows.append((session, n))
        self._changed()

    def release(self, session: str) -> None:
        """Let the running (held) turn of ``session`` finish."""
        self._gates[key(session)].set()

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, re-checking at every recorded change.

        Raises:
            TimeoutError: when it does not hold within ``within_s`` seconds.
        """
        async with asyncio.timeout(within_s):
            while not predicate():
                await self._tick.wait()

    async def until_started(self, n: int) -> None:
        """Wait until ``n`` turns started."""
        await self.wait_for(lambda: len(self.started) >= n)

    async def until_finished(self, n: int) -> None:
        """Wait until ``n`` turns finished."""
        await self.wait_for(lambda: len(self.finished) >= n)

    def turns_of(self, session: str, turns: list[Turn] | None = None) -> list[Turn]:
        """The finished (or given) turns of ``session``, in order."""
        k = key(session)
        return [t for t in (self.finished if turns is None else turns) if t.session_key == k]


async def eventually(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll ``predicate`` (for state that has no event, e.g. ``stats()``) every 10 ms.

    Raises:
        TimeoutError: when it does not hold within ``within_s`` seconds.
    """
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - stats() has no event to wait on
            await asyncio.sleep(0.01)
