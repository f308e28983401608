"""One Redis pub/sub subscription kept alive across outages (lane wake-ups, the event feed).

:class:`Subscription` subscribes to channels and/or patterns, hands every message's payload to
a callback, and when the connection breaks reconnects with redis-py's ``ExponentialBackoff``
(50 ms doubling up to 5 s, reset once a subscription is confirmed again). It reports the
state to a second callback: ``True`` when Redis confirmed the subscription (first time and
after each reconnect: a subscriber may have missed messages meanwhile and should re-read
what it watches), ``False`` when the connection broke.

Wire format: Redis pub/sub (https://redis.io/docs/latest/develop/interact/pubsub/); on Redis
Cluster, ``PUBLISH`` reaches every node's subscribers, so one connection to any node hears
every channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0
"""Seconds a subscription waits for its pub/sub connection to close when it stops."""

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError)


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` when the current task has a cancellation pending.

    A loop around redis-py calls calls this after each of them: redis-py 8.2's
    cancellation-safe teardowns (pooled connections, pub/sub) can consume a task's
    ``CancelledError`` and return normally, which left a stopped subscriber or leader lease
    looping forever (a test's event loop never closed). ``Task.cancelling()`` still counts the
    request (asyncio's own timeouts take theirs back with ``uncancel``), so the loop ends at
    its next turn.

    Raises:
        asyncio.CancelledError: when a cancellation was requested and not taken back.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


MessageHandler = Callable[[str], None]
"""Receives one message's payload (decoded text). Must not block; its errors are logged."""

StateHandler = Callable[[bool], None]
"""Receives ``True`` once Redis confirmed the subscription, ``False`` when it broke."""


class Subscription:
    """Keep ``channels`` and ``patterns`` subscribed on ``client`` while :meth:`run` runs.

    Args:
        client: a redis-py asyncio client (``Redis`` or ``RedisCluster``, decoding responses).
        on_message: called with each message's payload, in order.
        channels: channel names (``SUBSCRIBE``).
        patterns: glob patterns (``PSUBSCRIBE``).
        on_state: told when the subscription is confirmed (True) or lost (False).
        name: the log area of this subscription (``<name>.subscriber_failed``...).
        idle_s: seconds one read waits for a message before looping (bounds shutdown).

    Raises:
        ValueError: when neither channels nor patterns are given.
    """

    def __init__(
        self,
        client: Any,
        on_message: MessageHandler,
        *,
        channels: Sequence[str] = (),
        patterns: Sequence[str] = (),
        on_state: StateHandler | None = None,
        name: str = "redis",
        idle_s: float = 5.0,
    ) -> None:
        if not channels and not patterns:
            raise ValueError("subscribe to at least one channel or pattern")
        self._client = client
        self._on_message = on_message
        self._on_state = on_state
        self._channels = list(channels)
        self._patterns = list(patterns)
        self._name = name
        self._idle_s = idle_s
        self._backoff = ExponentialBackoff(cap=5.0, base=0.05)
        self.connected = False
        """True while the subscription is confirmed and its connection is up."""
        self.failures = 0
        """Consecutive failed attempts (0 while subscribed)."""

    async def run(self) -> None:
        """Task boundary: subscribe, deliver messages, reconnect with backoff; until cancelled."""
        while True:
            pubsub: PubSub | None = None
            try:
                if isinstance(self._client, RedisCluster):
                    await self._client.initialize()
                pubsub = self._client.pubsub()
                if self._channels:
                    await pubsub.subscribe(*self._channels)
                if self._patterns:
                    await pubsub.psubscribe(*self._patterns)
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self._set_state(False)
                delay = self._backoff.compute(self.failures)
                level = logging.WARNING if isinstance(exc, _UNAVAILABLE) else logging.ERROR
                logger.log(
                    level,
                    f"{self._name}.subscriber_failed",
                    exc_info=level == logging.ERROR,
                    extra={"retry_in_s": delay, "error": repr(exc)},
                )
                await asyncio.sleep(delay)
                raise_if_cancelled()
            finally:
                if pubsub is not None:
                    try:  # bounded: a cluster node's connection can hang on close
                        await asyncio.wait_for(asyncio.shield(pubsub.aclose()), CLOSE_TIMEOUT_S)
                    except Exception:  # gone already, or timed out
                        logger.debug(f"{self._name}.subscriber_close_failed", exc_info=True)

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=self._idle_s)
            raise_if_cancelled()
            if message is None:
                continue
            kind = message.get("type")
            if kind in ("subscribe", "psubscribe"):
                if self.failures:
                    logger.info(f"{self._name}.subscriber_reconnected")
                self.failures = 0
                self._set_state(True)
            elif kind in ("message", "pmessage"):
                try:
                    self._on_message(str(message["data"]))
                except Exception:
                    logger.exception(f"{self._name}.message_failed")

    def _set_state(self, up: bool) -> None:
        changed = up != self.connected
        self.connected = up
        if self._on_state is not None and (changed or up):
            try:
                self._on_state(up)
            except Exception:
                logger.exception(f"{self._name}.state_handler_failed")
