"""The hub: ingest, delivery, and the composition of lanes, store, agent, handoff and channels.

``ingest`` is the one door for customer messages: deduplicate by ``(channel, account,
event_id)``, persist durably, publish, enqueue on the session's lane. Only after it returns may a
channel acknowledge the platform. ``deliver`` is the one door out: store (idempotent), publish,
send through the customer's own channel with retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from cachetools import TTLCache
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from bot.agent import SupportAgent
from bot.channel import ChannelPlugin, IngestReceipt
from bot.config import Settings
from bot.envelope import (
    InboundMessage,
    OutboundKind,
    OutboundMessage,
    SessionKey,
    channel_of,
)
from bot.errors import ChannelUnavailable, Draining, RateLimited
from bot.events import EventBus, HubEvent
from bot.handoff import Handoff
from bot.lanes.base import LaneConfig, LaneQueue
from bot.observability import Metrics
from bot.retrieval import Passage, Retriever
from bot.router import Router
from bot.store.base import NewMessage, Role, Store, StoredMessage
from bot.tools import TicketBackend

log = logging.getLogger(__name__)

_ROLE_OF_KIND = {
    OutboundKind.ANSWER: Role.BOT,
    OutboundKind.NOTICE: Role.SYSTEM,
    OutboundKind.HANDOFF: Role.SYSTEM,
    OutboundKind.AGENT: Role.AGENT,
    OutboundKind.TYPING: Role.SYSTEM,
}

SEND_MAX_ATTEMPTS = 6
SEND_MAX_SECONDS = 60.0


class _NoKnowledge:
    """A retriever for hubs built without a knowledge base: finds nothing."""

    async def search(self, query: str, *, top_k: int = 5) -> list[Passage]:
        return []


def _wait_for_send(state: RetryCallState) -> float:
    """Honour ``RateLimited.retry_after``; back off exponentially otherwise (seconds)."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RateLimited):
        return max(0.0, exc.retry_after)
    return float(wait_exponential_jitter(multiplier=0.5, max=10.0)(state))


class Hub:
    """One hub process: see the module docstring. Implements :class:`bot.channel.HubAPI`."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        lanes: LaneQueue,
        agent: SupportAgent,
        tickets: TicketBackend,
        retriever: Retriever | None = None,
        channels: Sequence[ChannelPlugin] = (),
        metrics: Metrics | None = None,
        closeables: Sequence[Any] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.lanes = lanes
        self.agent = agent
        self.tickets = tickets
        self.retriever = retriever
        self.channels: dict[str, ChannelPlugin] = {c.name: c for c in channels}
        self.metrics = metrics or Metrics()
        self.events = EventBus()
        self.handoff = Handoff(
            settings, store, self.events, tickets, self.deliver, metrics=self.metrics
        )
        self.router = Router(self)
        self.ready = False
        self._draining = False
        self._closeables = list(closeables)
        self._seen: TTLCache[tuple[str, str, str], tuple[SessionKey, int | None]] = TTLCache(
            maxsize=settings.dedupe_max_entries, ttl=settings.dedupe_ttl_s
        )
        self._ingested_at: dict[tuple[SessionKey, str], float] = {}
        self._no_knowledge = _NoKnowledge()

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the lanes and channels, then re-enqueue what was accepted but not handled."""
        await self.lanes.start(self.router.handle, self.router.on_overflow)
        for channel in self.channels.values():
            await channel.start(self)
        recovered = await self.store.unhandled()
        for msg in recovered:
            await self.lanes.enqueue(msg, self.settings.queue_mode_for(msg.channel))
        if recovered:
            log.info("hub.recovered", extra={"messages": len(recovered)})
        self.ready = True
        log.info("hub.started", extra={"channels": sorted(self.channels)})

    async def stop(self, timeout_s: float | None = None) -> None:
        """Drain gracefully, then close everything.

        Refuses new messages, lets running turns finish (bounded by ``timeout_s``, default
        ``settings.drain_timeout_s`` seconds) and keeps what is queued: it stays stored as
        unhandled and is re-enqueued at the next start.
        """
        if self._draining:
            return
        self.ready = False
        self._draining = True
        timeout = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        left = await self.lanes.drain(timeout)
        log.info("hub.drained", extra={"kept_unhandled": len(left)})
        for channel in self.channels.values():
            try:
                await channel.stop()
            except Exception:
                log.exception("hub.channel_stop_failed", extra={"channel": channel.name})
        await self.lanes.close()
        for obj in self._closeables:
            try:
                await obj.close()
            except Exception:
                log.exception("hub.close_failed", extra={"object": type(obj).__name__})
        await self.store.close()

    @property
    def draining(self) -> bool:
        """True once :meth:`stop` began."""
        return self._draining

    @property
    def retriever_or_empty(self) -> Retriever:
        """The knowledge base, or a retriever that finds nothing."""
        return self.retriever if self.retriever is not None else self._no_knowledge

    # --- ingress ------------------------------------------------------------------------------
    async def ingest(self, msg: InboundMessage) -> IngestReceipt:
        """Deduplicate, persist, publish and enqueue one customer message.

        Returns:
            A receipt; ``duplicate`` is True when this event was accepted before.

        Raises:
            Draining: the hub is shutting down (answer 503 so the platform retries).
            bot.errors.BackendUnavailable: the store cannot keep the message (503).
        """
        if self._draining:
            raise Draining("the hub is shutting down; retry later")
        dkey = msg.dedupe_key
        seen = self._seen.get(dkey)
        if seen is not None:
            self.metrics.duplicates.labels(msg.channel).inc()
            return IngestReceipt(msg.event_id, seen[0], duplicate=True, seq=seen[1])
        stored = await self.store.append_inbound(msg)
        if stored is None:
            self.metrics.duplicates.labels(msg.channel).inc()
            self._seen[dkey] = (msg.session_key, None)
            return IngestReceipt(msg.event_id, msg.session_key, duplicate=True, seq=None)
        self._seen[dkey] = (msg.session_key, stored.seq)
        self._ingested_at[(msg.session_key, msg.event_id)] = time.monotonic()
        self.metrics.messages_in.labels(msg.channel).inc()
        self.events.publish(
            HubEvent(
                "message", msg.session_key, stored.seq, {"role": "customer", "kind": stored.kind}
            )
        )
        try:
            await self.lanes.enqueue(msg, self.settings.queue_mode_for(msg.channel))
        except Draining:
            # Stored as unhandled: the next start re-enqueues it. Accepted, not lost.
            log.info(
                "hub.kept_for_restart",
                extra={"session_key": msg.session_key, "event_id": msg.event_id},
            )
        return IngestReceipt(msg.event_id, msg.session_key, duplicate=False, seq=stored.seq)

    # --- egress -------------------------------------------------------------------------------
    async def deliver(self, out: OutboundMessage) -> StoredMessage:
        """Store an outbound message, publish it, and send it through its channel.

        Sending retries ``ChannelUnavailable`` with exponential backoff and honours
        ``RateLimited.retry_after`` (at most ``SEND_MAX_ATTEMPTS`` attempts within
        ``SEND_MAX_SECONDS`` seconds). A send that still fails is logged and counted; the
        message stays stored and visible in the conversation history.

        Returns:
            The stored message (the earlier one when ``idempotency_key`` was delivered before;
            then nothing is sent again).
        """
        role = _ROLE_OF_KIND[out.kind]
        [stored] = await self.store.append(
            [
                NewMessage(
                    session_key=out.session_key,
                    role=role,
                    text=out.text,
                    kind=str(out.kind),
                    event_id=out.idempotency_key,
                    reply_to=out.reply_to,
                    citations=out.citations,
                    author=out.author,
                )
            ]
        )
        if not stored.fresh:
            log.info(
                "hub.duplicate_delivery",
                extra={"session_key": out.session_key, "idempotency_key": out.idempotency_key},
            )
            return stored
        self.events.publish(
            HubEvent("message", out.session_key, stored.seq, {"role": str(role), "kind": out.kind})
        )
        channel_name = channel_of(out.session_key)
        channel = self.channels.get(channel_name)
        if channel is None:
            log.warning(
                "hub.no_channel", extra={"session_key": out.session_key, "channel": channel_name}
            )
        else:
            await self._send(channel, out)
        if out.reply_to is not None:
            t0 = self._ingested_at.pop((out.session_key, out.reply_to), None)
            if t0 is not None:
                self.metrics.hub_latency_seconds.observe(time.monotonic() - t0)
        return stored

    async def _send(self, channel: ChannelPlugin, out: OutboundMessage) -> None:
        try:
            await channel.send(out)
        except (ChannelUnavailable, RateLimited) as exc:
            log.warning(
                "hub.send_retrying",
                extra={
                    "session_key": out.session_key,
                    "channel": channel.name,
                    "error": repr(exc),
                },
            )
            await self._send_with_retries(channel, out, first_error=exc)
            return
        except Exception:
            self.metrics.send_failures.labels(channel.name).inc()
            log.exception(
                "hub.send_failed",
                extra={"session_key": out.session_key, "channel": channel.name},
            )
            return
        self.metrics.messages_out.labels(channel.name, str(out.kind)).inc()

    async def _send_with_retries(
        self, channel: ChannelPlugin, out: OutboundMessage, first_error: Exception
    ) -> None:
        """Retry a failed send: ``RateLimited.retry_after`` or exponential backoff."""
        if isinstance(first_error, RateLimited):
            await asyncio.sleep(max(0.0, first_error.retry_after))
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((ChannelUnavailable, RateLimited)),
                wait=_wait_for_send,
                stop=stop_after_attempt(SEND_MAX_ATTEMPTS) | stop_after_delay(SEND_MAX_SECONDS),
                reraise=True,
            ):
                with attempt:
                    await channel.send(out)
        except Exception:
            self.metrics.send_failures.labels(channel.name).inc()
            log.exception(
                "hub.send_failed",
                extra={"session_key": out.session_key, "channel": channel.name},
            )
            return
        self.metrics.messages_out.labels(channel.name, str(out.kind)).inc()

    def publish_typing(self, key: SessionKey) -> None:
        """Tell live viewers (web chat, console) that the bot is composing a reply."""
        self.events.publish(HubEvent("typing", key))

    def forget_ingest_times(self, key: SessionKey, messages: Sequence[InboundMessage]) -> None:
        """Drop latency bookkeeping of a finished turn's messages (bounded memory)."""
        for m in messages:
            self._ingested_at.pop((key, m.event_id), None)


async def build_hub(
    settings: Settings,
    *,
    agent: SupportAgent | None = None,
    retriever: Retriever | None = None,
    tickets: TicketBackend | None = None,
    channels: Sequence[ChannelPlugin] | None = None,
    store: Store | None = None,
    lanes: LaneQueue | None = None,
    load_knowledge: bool = True,
) -> Hub:
    """Compose a hub from settings; every ``None`` argument takes the embedded default.

    Args:
        settings: the configuration.
        agent: the support agent; default ``LLMAgent`` when ``llm_model`` is set, else the
            extractive agent over ``retriever``.
        retriever: the knowledge base; default the local Qdrant index in ``data_dir`` when
            ``load_knowledge`` (else none).
        tickets: the ticket backend; default the local SQL ticket store.
        channels: channel plugins; default every enabled plugin found by entry point.
        store: default ``SqlStore`` on ``settings.resolved_database_url``.
        lanes: default the memory lane backend.
        load_knowledge: open the local knowledge base when no retriever is given.

    Returns:
        A hub, not started (call ``await hub.start()``).

    Raises:
        bot.errors.ConfigError: for an unknown lane backend.
    """
    from bot.errors import ConfigError

    closeables: list[Any] = []
    if store is None:
        from bot.store import open_store

        store = await open_store(settings)
    if lanes is None:
        if settings.lane_backend != "memory":
            raise ConfigError(f"unknown lane backend {settings.lane_backend!r}")
        from bot.lanes.memory import MemoryLaneQueue

        lanes = MemoryLaneQueue(
            LaneConfig(
                max_concurrent_turns=settings.max_concurrent_turns,
                lane_cap=settings.lane_cap,
                debounce_ms=settings.debounce_ms,
                lane_idle_s=settings.lane_idle_s,
            )
        )
    if tickets is None:
        from plugins.ticketing.local import LocalTicketBackend

        tickets = LocalTicketBackend.for_store(store)
    if retriever is None and load_knowledge:
        from knowledge import KnowledgeBase

        kb = await KnowledgeBase.open(settings)
        retriever = kb
        closeables.append(kb)
    if agent is None:
        from bot.agent import ExtractiveAgent, LLMAgent, load_tools

        if settings.llm_model:
            agent = LLMAgent(settings, load_tools())
        else:
            threshold = 0.5
            if retriever is not None:
                from knowledge import RECOMMENDED_MIN_CONFIDENCE

                threshold = RECOMMENDED_MIN_CONFIDENCE
            agent = ExtractiveAgent(
                settings, retriever or _NoKnowledge(), min_confidence=threshold
            )
    if channels is None:
        from bot.registry import load_channels

        channels = [cls(settings) for cls in load_channels() if cls.enabled(settings)]
    return Hub(
        settings,
        store=store,
        lanes=lanes,
        agent=agent,
        tickets=tickets,
        retriever=retriever,
        channels=channels,
        closeables=closeables,
    )


async def run_forever(hub: Hub, stop: asyncio.Event) -> None:
    """Start ``hub``, wait for ``stop``, then drain (used by ``switchboard worker``-style runs)."""
    await hub.start()
    try:
        await stop.wait()
    finally:
        await hub.stop()
