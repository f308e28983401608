"""The pub/sub wake channel ``P:wake`` of the Redis lanes, as one process uses it.

Messages (the source of each is named):

- ``r``: work became ready (``G_STEP``, ``G_SWEEP``): wake the global loop.
- ``{"t": "c", "w": worker, "s": session, "k": token}``: cancel that worker's turn of the
  session if it still holds the fencing token (an ``interrupt`` message enqueued elsewhere).
- ``{"t": "o", "s": session}``: an overflow notice is open (enqueued by a process without an
  overflow handler): a consumer takes it, once across processes (``S_NOTICE``).

A lost message costs latency only: the global loop polls, heartbeats see interrupts, the next
turn takes an open notice.
"""

from __future__ import annotations

import asyncio
import json
import logging

from bot.envelope import SessionKey
from bot.lanes.base import LaneLifecycle
from bot.lanes.redis.client import UNAVAILABLE, Client
from bot.lanes.redis.keys import LaneKeys
from bot.lanes.redis.turns import Spawn, TurnRunner
from bot.redis_pubsub import Subscription

logger = logging.getLogger("bot.lanes.redis")


class WakeChannel:
    """Publishes to the wake channel and acts on its messages (see the module docstring).

    Args:
        client: the lanes' client.
        keys: the key names (:attr:`LaneKeys.channel`).
        turns: this process's turns (cancelled, or told of overflow, from here).
        life: the queue's lifecycle (is there an overflow handler).
        wake: set to wake the global loop.
        spawn: runs overflow notices in the background.
        worker_id: this process's name (cancel requests are addressed to it).
    """

    def __init__(
        self,
        client: Client,
        keys: LaneKeys,
        turns: TurnRunner,
        life: LaneLifecycle,
        wake: asyncio.Event,
        *,
        spawn: Spawn,
        worker_id: str,
    ) -> None:
        self._redis = client
        self._channel = keys.channel
        self._turns = turns
        self._life = life
        self._wake = wake
        self._spawn = spawn
        self._worker_id = worker_id

    def subscription(self) -> Subscription:
        """A subscription to the channel that acts on its messages (to ``run()``)."""
        return Subscription(
            self._redis,
            self._on_message,
            channels=[self._channel],
            on_state=self._on_subscribed,
            name="lane",
        )

    async def request_cancel(self, session: SessionKey, owner: str, token: str) -> None:
        """Interrupt the running turn of ``session``, here or in its owner's process."""
        if owner == self._worker_id:
            self._turns.interrupt(session, token)
            return
        await self._publish({"t": "c", "w": owner, "s": session, "k": token})

    async def offer_notice(self, session: SessionKey) -> None:
        """Tell the consumers that ``session`` has an open overflow notice."""
        await self._publish({"t": "o", "s": session})

    async def _publish(self, event: dict[str, str]) -> None:
        try:
            await self._redis.publish(self._channel, json.dumps(event))
        except UNAVAILABLE as exc:
            # The heartbeat (interrupts) or the next turn (notices) catches up.
            logger.warning("lane.publish_failed", extra={"error": repr(exc)})

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
        if kind == "c" and event.get("w") == self._worker_id:
            self._turns.interrupt(SessionKey(event.get("s", "")), event.get("k"))
        elif kind == "o" and self._life.on_overflow is not None:
            self._spawn(self._turns.take_notice(SessionKey(event.get("s", ""))))
