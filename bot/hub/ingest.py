"""The one door in: deduplicate, persist, publish and enqueue a customer message.

Deduplication is by ``(channel, account, event_id)`` (:attr:`InboundMessage.dedupe_key`): a
bounded TTL cache in front of the store, whose unique key is the durable check. With shared
lanes, a duplicate the store already has is put on its lane again **iff** it has no enqueued
mark (the attempt that stored it failed to enqueue it, or died before): see :mod:`bot.hub`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cachetools import TTLCache
from redis.exceptions import RedisError

from bot import tracing
from bot.channel import IngestReceipt
from bot.config import Settings
from bot.envelope import InboundMessage, SessionKey
from bot.errors import BackendUnavailable, Draining
from bot.events import EventBus, HubEvent
from bot.lanes.base import LaneQueue
from bot.observability import Metrics
from bot.store.base import Store
from bot.tracing import Span

if TYPE_CHECKING:
    from bot.events_redis import EnqueueMarks

log = logging.getLogger(__name__)


class IngestTimes:
    """When each message this process will answer was ingested (``time.monotonic()``).

    Feeds ``switchboard_hub_latency_seconds`` (ingest to answer sent); an entry leaves when its
    answer is delivered or its turn ends, so memory stays bounded by the messages in flight.
    """

    def __init__(self) -> None:
        self._at: dict[tuple[SessionKey, str], float] = {}

    def stamp(self, key: SessionKey, event_id: str) -> None:
        """Note that message ``event_id`` of session ``key`` was ingested now."""
        self._at[(key, event_id)] = time.monotonic()

    def pop(self, key: SessionKey, event_id: str) -> float | None:
        """The ingest time of ``event_id`` (forgotten from now on), or None when unknown."""
        return self._at.pop((key, event_id), None)

    def forget(self, key: SessionKey, messages: Sequence[InboundMessage]) -> None:
        """Drop the ingest times of ``messages`` (a finished turn's)."""
        for m in messages:
            self._at.pop((key, m.event_id), None)


class Ingress:
    """Takes customer messages in; the hub refuses them itself while it drains.

    Args:
        settings: dedupe cache size and TTL, queue mode per channel.
        store: where messages are kept durably before they are enqueued.
        lanes: the session lanes messages are enqueued on.
        events: the live feed the ``message`` event goes to.
        metrics: ``messages_in`` and ``duplicates`` counters.
        marks: enqueued marks of shared lanes (None: memory lanes).
        times: ingest times, stamped when ``consume`` (this process answers).
        consume: True when this process runs turns.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        lanes: LaneQueue,
        events: EventBus,
        metrics: Metrics,
        marks: EnqueueMarks | None,
        times: IngestTimes,
        consume: bool,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lanes = lanes
        self.events = events
        self.metrics = metrics
        self.marks = marks
        self.times = times
        self.consume = consume
        self._seen: TTLCache[tuple[str, str, str], tuple[SessionKey, int | None]] = TTLCache(
            maxsize=settings.dedupe_max_entries, ttl=settings.dedupe_ttl_s
        )

    async def ingest(self, msg: InboundMessage) -> IngestReceipt:
        """Deduplicate, persist, publish and enqueue one customer message.

        Returns:
            A receipt; ``duplicate`` is True when this event was accepted before.

        Raises:
            Draining: shared lanes refused it while shutting down (503: the platform's retry
                reaches another process).
            bot.errors.BackendUnavailable: the store cannot keep the message (503).
        """
        with tracing.span(Span.INGEST, attributes={"messaging.system": msg.channel}):
            return await self._ingest(msg)

    async def _ingest(self, msg: InboundMessage) -> IngestReceipt:
        dkey = msg.dedupe_key
        seen = self._seen.get(dkey)
        if seen is not None:
            self.metrics.duplicates.labels(msg.channel).inc()
            return IngestReceipt(msg.event_id, seen[0], duplicate=True, seq=seen[1])
        stored = await self.store.append_inbound(msg)
        if stored is None:
            self.metrics.duplicates.labels(msg.channel).inc()
            if self.marks is not None and not (await self.marked([msg]))[0]:
                # Stored by an attempt whose enqueue failed (503) or whose process died
                # before it: this retry puts it on its lane (or fails with 503 again).
                await self.enqueue(msg)
                log.info(
                    "hub.requeued",
                    extra={
                        "session_key": msg.session_key,
                        "event_id": msg.event_id,
                        "channel": msg.channel,
                    },
                )
            self._seen[dkey] = (msg.session_key, None)
            return IngestReceipt(msg.event_id, msg.session_key, duplicate=True, seq=None)
        if self.consume:
            self.times.stamp(msg.session_key, msg.event_id)
        self.metrics.messages_in.labels(msg.channel).inc()
        self.events.publish(
            HubEvent(
                "message", msg.session_key, stored.seq, {"role": "customer", "kind": stored.kind}
            )
        )
        try:
            await self.enqueue(msg)
        except Draining:
            if self.marks is not None:
                raise  # 503: the platform's retry reaches another process (unmarked: requeued)
            # Stored as unhandled: the next start re-enqueues it. Accepted, not lost.
            log.info(
                "hub.kept_for_restart",
                extra={"session_key": msg.session_key, "event_id": msg.event_id},
            )
        self._seen[dkey] = (msg.session_key, stored.seq)
        return IngestReceipt(msg.event_id, msg.session_key, duplicate=False, seq=stored.seq)

    async def enqueue(self, msg: InboundMessage) -> None:
        """Put ``msg`` on its lane, then mark it enqueued (shared lanes).

        Raises:
            Draining: the lanes are shutting down.
            bot.errors.BackendUnavailable: the lanes cannot take it.
        """
        with tracing.span(Span.ENQUEUE):
            if tracing.enabled():  # the worker that runs the turn continues this trace
                ctx = tracing.enqueue_context(time.time_ns())
                msg = msg.model_copy(update={"trace_context": ctx})
            await self.lanes.enqueue(msg, self.settings.queue_mode_for(msg.channel))
        if self.marks is not None:
            self.marks.mark(msg)

    async def marked(self, msgs: Sequence[InboundMessage]) -> list[bool]:
        """Enqueued marks of ``msgs``, in order (shared lanes only).

        Raises:
            bot.errors.BackendUnavailable: when Redis is away.
        """
        assert self.marks is not None
        try:
            return await self.marks.marked(msgs)
        except (OSError, RedisError) as exc:
            raise BackendUnavailable(f"cannot read enqueued marks: {exc}") from exc
