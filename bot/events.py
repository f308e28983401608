"""In-process event feed: what the console, long-polls and the web chat wait on.

Publishing is synchronous and cheap (no subscriber, no cost). A subscriber that falls behind by
more than its queue bound loses the oldest events and is flagged ``lagged``; consumers treat an
event as a hint and re-read the store by ``seq``, so nothing is lost for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.envelope import SessionKey

if TYPE_CHECKING:
    from bot.store.base import Conversation


@dataclass(frozen=True, slots=True)
class HubEvent:
    """A change in the hub.

    Attributes:
        type: ``message`` (a message was stored), ``mode`` (session mode changed), ``typing``.
        session_key: the session it concerns.
        seq: for ``message``, the stored message's seq.
        data: event-specific fields (JSON-serializable).
    """

    type: str
    session_key: SessionKey
    seq: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


def mode_event(conv: Conversation) -> HubEvent:
    """The ``mode`` event of ``conv``'s current mode.

    Returns:
        ``HubEvent("mode", session_key, data={"mode", "agent", "reason", "ticket_id"})``.
    """
    return HubEvent(
        "mode",
        conv.session_key,
        data={
            "mode": conv.mode.value,
            "agent": conv.assigned_agent,
            "reason": conv.escalation_reason,
            "ticket_id": conv.ticket_id,
        },
    )


class Subscription:
    """A bounded queue of events for one consumer."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[HubEvent] = asyncio.Queue(maxsize)
        self.lagged = False

    def _put(self, event: HubEvent) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.lagged = True
        self._queue.put_nowait(event)

    async def get(self, timeout_s: float | None = None) -> HubEvent | None:
        """The next event, or None after ``timeout_s`` seconds without one."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None

    def __aiter__(self) -> AsyncIterator[HubEvent]:
        return self

    async def __anext__(self) -> HubEvent:
        return await self._queue.get()


class EventBus:
    """Fan-out of :class:`HubEvent` to per-session and global subscribers."""

    def __init__(self) -> None:
        self._by_session: dict[SessionKey, set[Subscription]] = {}
        self._global: set[Subscription] = set()

    def publish(self, event: HubEvent) -> None:
        """Deliver ``event`` to every matching subscriber (never blocks)."""
        subs = self._by_session.get(event.session_key)
        if subs:
            for sub in subs:
                sub._put(event)
        for sub in self._global:
            sub._put(event)

    @asynccontextmanager
    async def subscribe(
        self, session_key: SessionKey | None = None, *, maxsize: int = 1000
    ) -> AsyncIterator[Subscription]:
        """Receive events of one session (or of all when ``session_key`` is None).

        Subscribe *before* reading the store, then read, then wait: no event can slip between.
        """
        sub = Subscription(maxsize)
        if session_key is None:
            self._global.add(sub)
        else:
            self._by_session.setdefault(session_key, set()).add(sub)
        try:
            yield sub
        finally:
            if session_key is None:
                self._global.discard(sub)
            else:
                subs = self._by_session.get(session_key)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._by_session[session_key]

    @property
    def subscriber_count(self) -> int:
        """Live subscriptions (for tests and metrics)."""
        return len(self._global) + sum(len(s) for s in self._by_session.values())
