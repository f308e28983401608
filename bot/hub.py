"""The hub: ingest, delivery, and the composition of lanes, store, agent, handoff and channels.

``ingest`` is the one door for customer messages: deduplicate by ``(channel, account,
event_id)``, persist durably, publish, enqueue on the session's lane. Only after it returns may a
channel acknowledge the platform. ``deliver`` is the one door out: store (idempotent), publish,
send through the customer's own channel with retries.

A hub either consumes its lanes (runs turns: ``switchboard serve`` and ``switchboard worker``)
or only feeds them (``switchboard serve --workers 0``: ingress only; needs shared lanes).

Recovery, nothing lost and nothing answered twice:

- **One process, memory lanes**: :meth:`Hub.start` re-enqueues every stored message that is
  not handled (``store.unhandled()``).
- **Shared (Redis) lanes**, several ingress and worker processes: a message is *accepted*
  (2xx to the platform) only once the store has it and ``lanes.enqueue`` returned (Redis has
  it). After a successful enqueue the hub writes an *enqueued mark* (``EnqueueMarks``, in the
  event publisher's pipeline, same Redis node as the lane). When the store has the message but
  the enqueue failed (Redis down: 503) or the process died between the two, the platform
  retries; the retry is a duplicate in the store, and the hub re-enqueues it **iff it has no
  mark** before answering. A sweep (every ``RECOVERY_INTERVAL_S`` seconds, in consuming
  processes, one at a time) re-enqueues stored unhandled messages that stayed unmarked over
  two sweeps (Redis lost data, a platform that never retries), each under a claim so two
  processes never both do it. Turns of a dead worker are resumed by the lanes (lease expiry).
  Every answer carries the idempotency key ``answer:{event_id}`` (notices ``failure:...``),
  so a message that reaches a lane twice (a mark lost with its writer) or a resumed turn never
  answers twice: the store returns the earlier answer and nothing is sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache
from redis.exceptions import RedisError
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
from bot.errors import BackendUnavailable, ChannelUnavailable, ConfigError, Draining, RateLimited
from bot.events import EventBus, HubEvent
from bot.handoff import Handoff
from bot.lanes.base import LaneConfig, LaneQueue
from bot.leader import PullReceivers
from bot.observability import Metrics
from bot.retrieval import Passage, Retriever
from bot.router import Router
from bot.store.base import NewMessage, Role, Store, StoredMessage
from bot.tools import TicketBackend

if TYPE_CHECKING:
    from bot.events_redis import EnqueueMarks

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
RECOVERY_INTERVAL_S = 30.0
"""Seconds between recovery sweeps of processes consuming shared lanes."""


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
        consume: bool = True,
        events: EventBus | None = None,
        marks: EnqueueMarks | None = None,
        receive: bool = True,
        lease_client: Any = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lanes = lanes
        self.agent = agent
        self.tickets = tickets
        self.retriever = retriever
        self.channels: dict[str, ChannelPlugin] = {c.name: c for c in channels}
        self.metrics = metrics or Metrics()
        self.consume = consume
        """True when this process runs turns (starts the lanes' consumers)."""
        self.receives = receive
        """True when this process takes platform traffic (not ``switchboard worker``)."""
        self.receivers = PullReceivers(
            self.channels.values(), client=lease_client, lease_s=settings.receiver_lease_s
        )
        """Pull receivers, under Redis leases when ``lease_client`` is given (bot.leader)."""
        self.events = events if events is not None else EventBus()
        self.marks = marks
        """Enqueued marks of shared lanes (None: memory lanes, recovery from the store)."""
        self.handoff = Handoff(
            settings, store, self.events, tickets, self.deliver, metrics=self.metrics
        )
        self.router = Router(self)
        self.ready = False
        self._draining = False
        self._stopping = False
        self._closeables = list(closeables)
        self._seen: TTLCache[tuple[str, str, str], tuple[SessionKey, int | None]] = TTLCache(
            maxsize=settings.dedupe_max_entries, ttl=settings.dedupe_ttl_s
        )
        self._ingested_at: dict[tuple[SessionKey, str], float] = {}
        self._no_knowledge = _NoKnowledge()
        self._recovery: asyncio.Task[None] | None = None
        self._suspects: set[tuple[str, str, str]] = set()

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the event feed, the lanes (when consuming) and channels, then recover.

        Memory lanes: re-enqueue what was accepted but not handled. Shared lanes: start the
        recovery sweep (consuming processes; see the module docstring).
        """
        start_events = getattr(self.events, "start", None)  # RedisEventBus: publisher/listener
        if start_events is not None:
            await start_events()
        if self.consume:
            await self.lanes.start(self.router.handle, self.router.on_overflow)
        for channel in self.channels.values():
            await channel.start(self)
        if self.receives:
            await self.receivers.start()
        if self.marks is None:
            recovered = await self.store.unhandled()
            for msg in recovered:
                await self.lanes.enqueue(msg, self.settings.queue_mode_for(msg.channel))
            if recovered:
                log.info("hub.recovered", extra={"messages": len(recovered)})
        elif self.consume:
            self._recovery = asyncio.create_task(self._recovery_loop(), name="hub.recovery")
        self.ready = True
        log.info("hub.started", extra={"channels": sorted(self.channels), "consume": self.consume})

    async def stop(self, timeout_s: float | None = None) -> None:
        """Drain gracefully, then close everything.

        Stops the pull receivers first (what they fetched is ingested: a Discord gateway
        never redelivers), then refuses new messages, lets running turns finish (bounded by
        ``timeout_s``, default ``settings.drain_timeout_s`` seconds) and keeps what is queued:
        it stays stored as unhandled and is re-enqueued at the next start.
        """
        if self._stopping:
            return
        self._stopping = True
        self.ready = False
        await self.receivers.stop()
        self._draining = True
        timeout = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.wait({self._recovery})
            self._recovery = None
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
        """True once :meth:`stop` refuses messages (after the pull receivers stopped)."""
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
            if self.marks is not None and not (await self._marked([msg]))[0]:
                # Stored by an attempt whose enqueue failed (503) or whose process died
                # before it: this retry puts it on its lane (or fails with 503 again).
                await self._enqueue(msg)
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
            self._ingested_at[(msg.session_key, msg.event_id)] = time.monotonic()
        self.metrics.messages_in.labels(msg.channel).inc()
        self.events.publish(
            HubEvent(
                "message", msg.session_key, stored.seq, {"role": "customer", "kind": stored.kind}
            )
        )
        try:
            await self._enqueue(msg)
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

    async def _enqueue(self, msg: InboundMessage) -> None:
        """Put ``msg`` on its lane, then mark it enqueued (shared lanes)."""
        await self.lanes.enqueue(msg, self.settings.queue_mode_for(msg.channel))
        if self.marks is not None:
            self.marks.mark(msg)

    async def _marked(self, msgs: Sequence[InboundMessage]) -> list[bool]:
        """Enqueued marks of ``msgs``; raises ``BackendUnavailable`` when Redis is away."""
        assert self.marks is not None
        try:
            return await self.marks.marked(msgs)
        except (OSError, RedisError) as exc:
            raise BackendUnavailable(f"cannot read enqueued marks: {exc}") from exc

    # --- recovery (shared lanes) --------------------------------------------------------------
    async def _recovery_loop(self) -> None:
        """Task boundary: run :meth:`recover_unmarked` every ``RECOVERY_INTERVAL_S`` seconds."""
        while True:
            try:
                await self.recover_unmarked()
            except (BackendUnavailable, Draining) as exc:
                log.warning("hub.recovery_failed", extra={"error": repr(exc)})
            except Exception:
                log.exception("hub.recovery_failed")
            await asyncio.sleep(RECOVERY_INTERVAL_S)

    async def recover_unmarked(self) -> int:
        """One recovery sweep of shared lanes; returns how many messages it re-enqueued.

        Re-enqueues stored, unhandled messages that have no enqueued mark now and had none at
        the previous sweep of this process (so an ingest between its store write and its
        enqueue is never taken for lost).

        Returns:
            How many messages this sweep put back on their lanes.

        Raises:
            bot.errors.BackendUnavailable: when Redis or the store cannot be reached.
        """
        if self.marks is None:
            return 0
        msgs = await self.store.unhandled()
        flags = await self._marked(msgs)
        unmarked = [m for m, ok in zip(msgs, flags, strict=True) if not ok]
        due = [m for m in unmarked if m.dedupe_key in self._suspects]
        self._suspects = {m.dedupe_key for m in unmarked} - {m.dedupe_key for m in due}
        done = 0
        for msg in due:
            try:
                claimed = await self.marks.claim(msg, RECOVERY_INTERVAL_S * 2)
            except (OSError, RedisError) as exc:
                raise BackendUnavailable(f"cannot claim recovery: {exc}") from exc
            if claimed:
                await self._enqueue(msg)
                done += 1
        if done:
            log.warning("hub.recovered", extra={"messages": done})
        return done

    # --- egress -------------------------------------------------------------------------------
    async def deliver(self, out: OutboundMessage) -> StoredMessage:
        """Store an outbound message, publish it, and send it through its channel.

        Sending retries ``ChannelUnavailable`` with exponential backoff and honours
        ``RateLimited.retry_after`` (after the first attempt, at most ``SEND_MAX_ATTEMPTS`` within
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
        """Send once; on a retryable failure enter the retry loop; log and count a final one."""
        try:
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
        """Retry a failed send: ``RateLimited.retry_after`` or exponential backoff.

        Raises:
            Exception: the last error when every retry failed.
        """
        if isinstance(first_error, RateLimited):
            await asyncio.sleep(max(0.0, first_error.retry_after))
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((ChannelUnavailable, RateLimited)),
            wait=_wait_for_send,
            stop=stop_after_attempt(SEND_MAX_ATTEMPTS) | stop_after_delay(SEND_MAX_SECONDS),
            reraise=True,
        ):
            with attempt:
                await channel.send(out)

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
    consume: bool = True,
    events: EventBus | None = None,
    listen_events: bool = True,
    receive: bool = True,
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
        lanes: default by ``lane_backend``: ``memory``, or ``redis`` (``RedisLaneQueue`` on
            ``redis_url``, leases of ``lane_lease_s`` seconds).
        load_knowledge: open the local knowledge base when no retriever is given (skipped for
            ``agent: scripted``). A local index locked by another process is opened as a
            read-only snapshot copy (see :func:`bot.worker.open_knowledge`).
        consume: run turns (False: ingress only; needs the ``redis`` lane backend).
        events: the live event feed; default ``EventBus`` (memory lanes) or ``RedisEventBus``
            on ``redis_url`` (redis lanes).
        listen_events: with ``RedisEventBus``, receive other processes' events (processes
            that serve live viewers); ``switchboard worker`` only publishes.
        receive: take platform traffic: run pull receivers (under Redis leases with shared
            lanes, :mod:`bot.leader`) and listeners; False for ``switchboard worker``.

    Returns:
        A hub, not started (call ``await hub.start()``).

    Raises:
        bot.errors.ConfigError: for an unknown lane backend or agent, a missing
            ``redis_url``, or ``consume=False`` with memory lanes.
    """
    closeables: list[Any] = []
    if settings.agent not in ("auto", "scripted"):
        raise ConfigError(f"unknown agent {settings.agent!r} (auto or scripted)")
    if settings.lane_backend not in ("memory", "redis"):
        raise ConfigError(f"unknown lane backend {settings.lane_backend!r} (memory or redis)")
    if settings.lane_backend == "redis" and not settings.redis_url and lanes is None:
        raise ConfigError("lane_backend redis needs SWITCHBOARD_REDIS_URL")
    if not consume and settings.lane_backend == "memory" and lanes is None:
        raise ConfigError(
            "an ingress-only process (--workers 0) needs shared lanes: "
            "set SWITCHBOARD_LANE_BACKEND=redis and SWITCHBOARD_REDIS_URL"
        )
    if store is None:
        from bot.store import open_store

        store = await open_store(settings)
    lane_config = LaneConfig(
        max_concurrent_turns=settings.max_concurrent_turns,
        lane_cap=settings.lane_cap,
        debounce_ms=settings.debounce_ms,
        lane_idle_s=settings.lane_idle_s,
    )
    if lanes is None:
        if settings.lane_backend == "redis":
            from bot.lanes.redis import RedisLaneQueue

            assert settings.redis_url is not None
            lanes = RedisLaneQueue(lane_config, settings.redis_url, lease_s=settings.lane_lease_s)
        else:
            from bot.lanes.memory import MemoryLaneQueue

            lanes = MemoryLaneQueue(lane_config)
    marks = None
    lease_client = None
    session_keys = getattr(lanes, "session_keys", None)  # RedisLaneQueue: shared lanes
    if session_keys is not None:
        lease_client = getattr(lanes, "client", None)
        from bot.events_redis import EnqueueMarks, RedisEventBus

        if events is None:
            url = settings.redis_url
            if url is None:
                raise ConfigError("shared lanes need SWITCHBOARD_REDIS_URL for the event feed")
            events = RedisEventBus(url, listen=listen_events)
        if isinstance(events, RedisEventBus):
            closeables.append(events)

            def tag_of(key: SessionKey) -> str:
                return str(session_keys(key)[0]).rsplit(":", 1)[0]

            marks = EnqueueMarks(events, tag_of, settings.dedupe_ttl_s)
    if tickets is None:
        from plugins.ticketing.local import LocalTicketBackend

        tickets = LocalTicketBackend.for_store(store)
    if retriever is None and load_knowledge and settings.agent == "auto":
        from bot.worker import open_knowledge

        kb, snapshot = await open_knowledge(settings)
        retriever = kb
        closeables.append(kb)
        if snapshot is not None:
            closeables.append(snapshot)
    if agent is None and settings.agent == "scripted":
        from bot.bench import ScriptedAgent

        agent = ScriptedAgent()
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
        consume=consume,
        events=events,
        marks=marks,
        receive=receive,
        lease_client=lease_client,
    )
