"""The live event feed across processes: :class:`RedisEventBus` on Redis pub/sub.

Same interface as :class:`bot.events.EventBus` (it is one): ``publish`` never blocks and
``subscribe(session_key | None)`` yields events published by *any* process sharing the Redis
server and ``prefix``, so a REST long poll, a webchat socket or the console in an ingress
process sees the reply a worker stored.

Wire format (Redis pub/sub, https://redis.io/docs/latest/develop/interact/pubsub/): one
``PUBLISH {prefix}:ev:{session_key}`` per event, payload JSON
``{"o": origin, "t": type, "k": session_key, "s": seq, "d": data}`` where ``origin`` names the
publishing process. Events of this process reach its own subscribers at once (no round trip)
and are skipped when they come back from Redis.

- **Publishing** queues the event (bounded by ``max_pending``; the oldest is dropped and
  counted when Redis is away for long) for one background task that sends everything queued
  in one pipeline round trip. The same pipeline carries :meth:`after_publish` commands (the
  hub's "enqueued" markers).
- **Receiving** is one ``PSUBSCRIBE {prefix}:ev:*`` per process, made by :meth:`start` (which
  waits for Redis to confirm it) before the process serves requests: a subscriber that
  subscribes, then reads the store, then waits cannot miss an event. Every listening process
  receives the whole feed (about three small events per customer message); processes that
  serve no live viewers (``switchboard worker``) do not listen at all.
- **Outages**: both tasks reconnect with exponential backoff (50 ms doubling up to 5 s). Events
  published meanwhile are lost for other processes; viewers treat events as hints and re-read
  the store by ``seq``, so they only see the change later (at their next poll).
- **Health**: :attr:`RedisEventBus.connected` is False while the publisher or the listener
  cannot reach Redis. Each change is also published to this process's own subscribers as a
  ``backend`` event (session key ``""``, data ``{"redis": "down"|"up", "since": ISO 8601}``),
  never sent to Redis: the console shows an outage banner from it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

from redis.backoff import ExponentialBackoff

from bot.envelope import InboundMessage, SessionKey, utcnow
from bot.events import EventBus, HubEvent
from bot.lanes.redis import connect
from bot.redis_pubsub import Subscription

logger = logging.getLogger(__name__)

_BATCH_MAX: Final = 512
"""Most events (and markers) sent in one pipeline round trip."""


class RedisEventBus(EventBus):
    """An :class:`~bot.events.EventBus` shared by every process of one deployment.

    Args:
        url: the Redis server or cluster (the forms of :func:`bot.lanes.redis.connect`).
        prefix: channel prefix; processes with the same prefix share the feed.
        listen: receive other processes' events (True for processes that serve viewers).
        max_pending: events kept while Redis is unreachable before the oldest are dropped.
        origin: this process's name in payloads (default ``host:pid:random``).

    Call :meth:`start` before serving and :meth:`close` at shutdown.

    Raises:
        ValueError: for an invalid URL.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sb",
        listen: bool = True,
        max_pending: int = 100_000,
        origin: str | None = None,
    ) -> None:
        super().__init__()
        self._redis = connect(url)
        self.prefix = prefix
        self.listen = listen
        self.origin = origin or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._pending: collections.deque[tuple[str, ...]] = collections.deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._publisher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._backoff = ExponentialBackoff(cap=5.0, base=0.05)
        self.dropped = 0
        """Events dropped because more than ``max_pending`` waited for Redis."""
        self._publisher_ok = self._listener_ok = True
        self.changed_at = utcnow()
        """When :attr:`connected` last changed (UTC)."""

    @property
    def connected(self) -> bool:
        """False while the publisher or the listener cannot reach Redis (health, console)."""
        return self._publisher_ok and self._listener_ok

    def _health(self, *, publisher: bool | None = None, listener: bool | None = None) -> None:
        """Record the reachability one task saw; on a change, log it and tell local viewers."""
        before = self.connected
        if publisher is not None:
            self._publisher_ok = publisher
        if listener is not None:
            self._listener_ok = listener
        now = self.connected
        if now == before:
            return
        self.changed_at = utcnow()
        logger.log(
            logging.INFO if now else logging.WARNING,
            "events.redis_up" if now else "events.redis_down",
            extra={"origin": self.origin},
        )
        EventBus.publish(
            self,
            HubEvent(
                "backend",
                SessionKey(""),
                None,
                {"redis": "up" if now else "down", "since": self.changed_at.isoformat()},
            ),
        )

    # --- lifecycle ----------------------------------------------------------------------------
    def channel_of(self, session_key: SessionKey) -> str:
        """The pub/sub channel of a session: ``{prefix}:ev:{session_key}``."""
        return f"{self.prefix}:ev:{session_key}"

    async def start(self, *, timeout_s: float = 5.0) -> None:
        """Start publishing, and (with ``listen``) subscribe and wait until Redis confirmed.

        Args:
            timeout_s: seconds to wait for the subscription; after that the listener keeps
                trying in the background (logged), and the process starts anyway.
        """
        loop = asyncio.get_running_loop()
        if self._publisher is None:
            self._publisher = loop.create_task(self._publish_loop(), name="events.publisher")
        if self.listen and self._listener is None:
            subscription = Subscription(
                self._redis,
                self._receive,
                patterns=[f"{self.prefix}:ev:*"],
                on_state=self._on_listening,
                name="events",
            )
            self._listener = loop.create_task(subscription.run(), name="events.listener")
            try:
                await asyncio.wait_for(self._listening.wait(), timeout_s)
            except TimeoutError:
                logger.warning("events.subscribe_slow", extra={"timeout_s": timeout_s})

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued was sent (True), or ``timeout_s`` seconds (False)."""
        if not self._pending:
            return True
        self._idle.clear()
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Send what is queued (up to 2 s), stop both tasks and close the connections."""
        if self._publisher is not None and not self._publisher.done():
            await self.flush(2.0)
        for task in (self._publisher, self._listener):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._publisher = self._listener = None
        await self._redis.aclose()

    # --- publishing ---------------------------------------------------------------------------
    def publish(self, event: HubEvent) -> None:
        """Deliver ``event`` to this process's subscribers now and queue it for the others.

        Never blocks and never raises for Redis errors.
        """
        super().publish(event)
        payload = json.dumps(
            {
                "o": self.origin,
                "t": event.type,
                "k": event.session_key,
                "s": event.seq,
                "d": event.data,
            },
            separators=(",", ":"),
        )
        self._queue(("PUBLISH", self.channel_of(event.session_key), payload))

    def after_publish(self, *command: str) -> None:
        """Queue one Redis command for the publisher's next pipeline (fire and forget).

        Used for best-effort writes that must not cost a round trip of their own, e.g.
        ``("SET", key, "1", "EX", "86400")``. Lost when Redis stays away past ``max_pending``.
        """
        self._queue(tuple(command))

    def _queue(self, command: tuple[str, ...]) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(command)
        self._wake.set()

    async def _publish_loop(self) -> None:
        """Task boundary: send queued commands in pipelines; back off while Redis is away."""
        failures = 0
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            n = min(len(self._pending), _BATCH_MAX)
            batch = [self._pending.popleft() for _ in range(n)]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for command in batch:
                        pipe.execute_command(*command)
                    await pipe.execute(raise_on_error=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Put the batch back in front (the deque's bound drops the oldest).
                room = (self._pending.maxlen or n) - len(self._pending)
                keep = batch[len(batch) - max(0, min(room, n)) :]
                self.dropped += n - len(keep)
                self._pending.extendleft(reversed(keep))
                failures += 1
                self._health(publisher=False)
                delay = self._backoff.compute(failures)
                logger.warning(
                    "events.publish_failed",
                    extra={"retry_in_s": delay, "queued": len(self._pending), "error": repr(exc)},
                )
                await asyncio.sleep(delay)
                continue
            if failures:
                logger.info("events.reconnected", extra={"role": "publisher"})
                failures = 0
                self._health(publisher=True)

    # --- receiving ----------------------------------------------------------------------------
    def _on_listening(self, up: bool) -> None:
        """State of the ``PSUBSCRIBE``: confirmed (up) or lost."""
        if up:
            self._listening.set()
        self._health(listener=up)

    def _receive(self, raw: str) -> None:
        try:
            body: dict[str, Any] = json.loads(raw)
        except ValueError:
            logger.warning("events.bad_payload", extra={"payload": raw[:200]})
            return
        if body.get("o") == self.origin:
            return
        seq = body.get("s")
        data = body.get("d")
        event = HubEvent(
            str(body.get("t", "")),
            SessionKey(str(body.get("k", ""))),
            int(seq) if isinstance(seq, int) else None,
            data if isinstance(data, dict) else {},
        )
        EventBus.publish(self, event)

    @property
    def client(self) -> Any:
        """The redis-py client (shared with :class:`EnqueueMarks`)."""
        return self._redis

    @property
    def pending(self) -> int:
        """Commands waiting for the publisher."""
        return len(self._pending)


class EnqueueMarks:
    """Redis records of "this accepted message reached a lane" (the hub's recovery rule).

    A mark is written after ``lanes.enqueue`` returned, in the event publisher's next pipeline
    (no round trip of its own), under the session's hash tag, so it lives on the same Redis
    node as the lane and is lost together with it. Keys: ``{tag}:m:{channel}:{account}:
    {event_id}`` with a TTL of ``ttl_s`` seconds (the dedupe window); recovery claims:
    ``{tag}:c:...`` (``SET NX PX``).

    Args:
        bus: the event bus whose publisher carries the marks (and whose client reads them).
        tag_of: the hash tag of a session's keys, e.g. ``"{sb:rest:default:c1}"``.
        ttl_s: seconds a mark lives.
    """

    def __init__(
        self, bus: RedisEventBus, tag_of: Callable[[SessionKey], str], ttl_s: float
    ) -> None:
        self._bus = bus
        self._tag_of = tag_of
        self._ttl = str(max(1, int(ttl_s)))

    def _key(self, msg: InboundMessage, kind: str) -> str:
        return f"{self._tag_of(msg.session_key)}:{kind}:{msg.channel}:{msg.account}:{msg.event_id}"

    def mark(self, msg: InboundMessage) -> None:
        """Record (best effort, asynchronously) that ``msg`` reached its lane."""
        self._bus.after_publish("SET", self._key(msg, "m"), "1", "EX", self._ttl)

    async def marked(self, msgs: Sequence[InboundMessage]) -> list[bool]:
        """Whether each message is marked (one pipelined round trip).

        Raises:
            redis.exceptions.RedisError, OSError: when Redis cannot be reached.
        """
        if not msgs:
            return []
        async with self._bus.client.pipeline(transaction=False) as pipe:
            for msg in msgs:
                pipe.exists(self._key(msg, "m"))
            found = await pipe.execute()
        return [bool(int(x)) for x in found]

    async def claim(self, msg: InboundMessage, ttl_s: float) -> bool:
        """Take the right to re-enqueue ``msg`` for ``ttl_s`` seconds (False: someone has it)."""
        ok = await self._bus.client.set(
            self._key(msg, "c"), self._bus.origin, nx=True, px=max(1, int(ttl_s * 1000))
        )
        return bool(ok)
