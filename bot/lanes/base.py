"""The :class:`LaneQueue` protocol every lane backend implements (memory, redis).

Semantics (the contract suite in ``tests/lanes/`` checks each one on every backend):

- Strict FIFO inside a session; at most one active turn per session.
- At most ``max_concurrent_turns`` turns run at once across all sessions; sessions that wait
  for a slot are served in the order they became ready (no session starves another).
- Queue modes, chosen per message at enqueue time (the hub resolves channel/session overrides):
  ``collect`` (messages that arrive while a turn runs become one follow-up turn once no new
  message arrived for ``debounce_ms`` after that turn ended; the first message of an idle lane
  starts at once), ``followup`` (one turn per message, never batched), ``interrupt``
  (cancel the running turn; the next turn starts without a quiet window and carries the
  cancelled turn's messages plus the new ones, so nothing the customer said is lost).
- At most ``lane_cap`` messages wait per session. Beyond it, the oldest waiting messages are
  folded into the next turn's ``overflow`` (kept, summarized by the agent) and ``on_overflow``
  is called once per overflow episode (an episode ends when a turn takes the folded
  messages) so the customer can be told. Nothing is dropped.
- A lane with no waiting message and no running turn is reclaimed after ``lane_idle_s``; the
  memory a session costs is bounded by its queued work.
- A handler that raises is logged (``lane.turn_failed``) and the lane goes on with its next
  messages. Turn timeouts are the caller's job (the hub wraps its handler).
- ``drain`` stops starting turns, waits up to a bound for running turns, cancels the rest and
  returns every message not handled (queued or cancelled) so the hub can persist it or hand
  it to another worker.
- Data-subject requests (:class:`LaneSelection`): ``queued`` lists the waiting messages of one
  customer (and others' messages that name them); ``purge`` takes theirs out of every lane and
  replaces their identifiers in the others, never touching a running turn's messages (it
  reports them as ``in_flight``: purge again once that turn ended). A lane left with nothing
  is removed as if it had never been; the lanes of other sessions go on as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from bot.config import QueueMode
from bot.envelope import InboundMessage, SessionKey
from bot.errors import Draining

CANCEL_GRACE_S: Final = 1.0
"""Seconds ``drain``/``close`` wait for cancelled turn tasks to unwind."""


@dataclass(slots=True)
class Turn:
    """The work of one turn of one session.

    Attributes:
        session_key: the conversation.
        messages: the messages this turn answers, oldest first (at least one).
        overflow: older messages folded in because the lane overflowed ``lane_cap``; the agent
            sees them summarized. Oldest first.
        mode: the queue mode the turn was scheduled under.
        interrupted: True when this turn replaces a cancelled one (``interrupt`` mode).
    """

    session_key: SessionKey
    messages: list[InboundMessage]
    overflow: list[InboundMessage] = field(default_factory=list)
    mode: QueueMode = QueueMode.COLLECT
    interrupted: bool = False

    @property
    def all_messages(self) -> list[InboundMessage]:
        """Overflow then messages: every customer message this turn covers, oldest first."""
        return [*self.overflow, *self.messages]


TurnHandler = Callable[[Turn], Awaitable[None]]
"""Runs one turn. Cancelled (``CancelledError``) when an ``interrupt`` message supersedes it.
An exception it raises is logged by the lane and does not stop the lane."""

OverflowHandler = Callable[[SessionKey, int], Awaitable[None]]
"""Called with the session and the number of messages folded so far in the episode (at least
1; a burst of messages usually counts whole), once per overflow episode. Its errors are logged."""


@dataclass(frozen=True, slots=True)
class LaneStats:
    """A snapshot of a lane backend.

    Attributes:
        lanes: sessions that currently hold a lane (waiting work or a running turn).
        queued: messages waiting across all lanes.
        active_turns: turns running now.
        ready_sessions: sessions with work waiting for a turn slot.
    """

    lanes: int
    queued: int
    active_turns: int
    ready_sessions: int


@dataclass(frozen=True, slots=True)
class LaneConfig:
    """Backend-independent lane settings (see :class:`bot.config.Settings`).

    Attributes:
        max_concurrent_turns: global cap on running turns.
        lane_cap: waiting messages per session before overflow folding starts.
        debounce_ms: quiet window of ``collect`` mode, milliseconds.
        lane_idle_s: seconds an idle lane is kept before it is reclaimed.
    """

    max_concurrent_turns: int = 16
    lane_cap: int = 20
    debounce_ms: int = 300
    lane_idle_s: float = 30.0

    def check(self) -> None:
        """Check the values (every backend does before it takes them).

        Raises:
            ValueError: when ``max_concurrent_turns`` or ``lane_cap`` is below 1, or
                ``debounce_ms``/``lane_idle_s`` is negative.
        """
        if self.max_concurrent_turns < 1 or self.lane_cap < 1:
            raise ValueError("max_concurrent_turns and lane_cap must be at least 1")
        if self.debounce_ms < 0 or self.lane_idle_s < 0:
            raise ValueError("debounce_ms and lane_idle_s must not be negative")


Match = Literal["theirs", "mentions", "other"]
"""How a queued message relates to a data subject (see :meth:`LaneSelection.match`)."""


@dataclass(frozen=True, slots=True)
class LaneSelection:
    """The queued messages one data-subject request is about.

    Attributes:
        sessions: lanes that are wholly the subject's (their direct conversations): every
            message in them is theirs.
        owns: True for a message the subject sent in any other lane (a group chat).
        scrub: another message with the subject's identifiers replaced (its routing fields
            unchanged); equal to the message when it names them nowhere.
    """

    sessions: frozenset[SessionKey]
    owns: Callable[[InboundMessage], bool]
    scrub: Callable[[InboundMessage], InboundMessage]

    def match(self, msg: InboundMessage) -> tuple[Match, InboundMessage]:
        """``("theirs", msg)``, ``("mentions", scrubbed)`` or ``("other", msg)``."""
        if msg.session_key in self.sessions or self.owns(msg):
            return "theirs", msg
        scrubbed = self.scrub(msg)
        return ("mentions", scrubbed) if scrubbed != msg else ("other", msg)


@dataclass(frozen=True, slots=True)
class QueuedEntry:
    """A message waiting in a lane that a data-subject request is about.

    Attributes:
        message: the envelope as queued (received and stored, not answered yet).
        match: ``"theirs"`` (they sent it) or ``"mentions"`` (another's, naming them).
        in_turn: a turn holds it now (it is being answered).
    """

    message: InboundMessage
    match: Match
    in_turn: bool

    def as_json(self) -> dict[str, object]:
        """``{"session_key", "match", "in_turn", "envelope"}`` (the export's form)."""
        return {
            "session_key": self.message.session_key,
            "match": self.match,
            "in_turn": self.in_turn,
            "envelope": self.message.model_dump(mode="json"),
        }


@dataclass(frozen=True, slots=True)
class LanePurge:
    """What one ``purge`` did (counts of messages and keys).

    Attributes:
        removed: the subject's messages taken out of lanes.
        scrubbed: other messages whose identifiers of the subject were replaced.
        lanes_dropped: lanes removed because nothing was left in them.
        in_flight: selected messages a running turn holds, left alone: purge again once it
            ended (its reply is stored after it; erase the database after that).
        keys_deleted: other keys the backend kept under the subject's sessions (``final``).
    """

    removed: int = 0
    scrubbed: int = 0
    lanes_dropped: int = 0
    in_flight: int = 0
    keys_deleted: int = 0

    def __add__(self, other: LanePurge) -> LanePurge:
        """Both purges' counts summed (``in_flight`` is the latter's: it is a state)."""
        return LanePurge(
            self.removed + other.removed,
            self.scrubbed + other.scrubbed,
            self.lanes_dropped + other.lanes_dropped,
            other.in_flight,
            self.keys_deleted + other.keys_deleted,
        )


class LaneQueue(Protocol):
    """A per-session lane queue backend."""

    async def start(self, handler: TurnHandler, on_overflow: OverflowHandler) -> None:
        """Start consuming: turns are passed to ``handler``.

        Raises:
            RuntimeError: when already started.
        """

    async def enqueue(self, msg: InboundMessage, mode: QueueMode) -> int:
        """Append a message to its session's lane.

        Args:
            msg: the message (already deduplicated and persisted by the hub).
            mode: the queue mode to schedule it under.

        Returns:
            The number of messages of that session waiting for a turn after this call,
            folded overflow included (0 when a turn for it started at once).

        Raises:
            bot.errors.Draining: when the queue is draining or closed.
            bot.errors.BackendUnavailable: when the backend cannot keep the message.
        """

    async def drain(self, timeout_s: float) -> list[InboundMessage]:
        """Stop starting turns and return every message not handled.

        Waits up to ``timeout_s`` seconds for running turns to finish, then cancels those still
        running; their messages count as not handled. A turn that finished in time (even by
        raising) counts as handled. ``enqueue`` raises ``Draining`` from the first call on.

        Args:
            timeout_s: seconds to wait for running turns.

        Returns:
            The messages not handled (queued, folded or cancelled), oldest first per session.
            The caller owns them.
        """

    def stats(self) -> LaneStats:
        """A snapshot of sizes (cheap, no I/O)."""

    async def close(self) -> None:
        """Release resources; ``drain`` first for a graceful stop."""

    async def queued(self, select: LaneSelection) -> list[QueuedEntry]:
        """The waiting (or running) messages ``select`` is about, in every lane.

        Raises:
            bot.errors.BackendUnavailable: when the backend cannot be read.
        """

    async def purge(self, select: LaneSelection, *, final: bool = False) -> LanePurge:
        """Take the subject's messages out of every lane and scrub the others naming them.

        Messages a running turn holds are left alone and counted as ``in_flight``. With
        ``final``, also delete what else the backend keeps under the subject's sessions
        (Redis: enqueue marks): only once the database no longer holds their messages, or
        recovery would enqueue them again.

        Raises:
            bot.errors.BackendUnavailable: when the backend cannot be reached.
        """


LaneFactory = Callable[[LaneConfig], LaneQueue]


@dataclass(slots=True)
class LaneLifecycle:
    """Where a backend is in its life, and the preconditions of ``start`` and ``enqueue``.

    Attributes:
        handler: the turn handler given to ``start`` (None before).
        on_overflow: the overflow handler given to ``start`` (None before).
        draining: ``drain`` began (no turn starts any more, ``enqueue`` refuses).
        closed: ``close`` ran.
    """

    handler: TurnHandler | None = None
    on_overflow: OverflowHandler | None = None
    draining: bool = False
    closed: bool = False

    def start(self, handler: TurnHandler, on_overflow: OverflowHandler) -> None:
        """Check that ``start`` may run, then keep its handlers.

        Raises:
            RuntimeError: when already started.
            bot.errors.Draining: when the queue was drained or closed.
        """
        if self.handler is not None:
            raise RuntimeError("lane queue already started")
        if self.draining or self.closed:
            raise Draining("lane queue is closed")
        self.handler = handler
        self.on_overflow = on_overflow

    def check_open(self) -> None:
        """Check that ``enqueue`` may run.

        Raises:
            bot.errors.Draining: when the queue is draining or closed.
        """
        if self.draining or self.closed:
            raise Draining("lane queue is draining")

    @property
    def consuming(self) -> bool:
        """Started and not draining: turns may start."""
        return self.handler is not None and not self.draining


def fold_text(messages: Sequence[InboundMessage]) -> str:
    """Join several customer messages into one prompt text, one per line, oldest first."""
    return "\n".join(m.text for m in messages if m.text)
