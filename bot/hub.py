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
- **A platform that does not take an answer** (down, rate limiting, network errors) past the
  inline retries goes to the store's *outbox*; while a session has outbox entries its later
  messages queue behind them (FIFO per session: answer 2 never overtakes answer 1). A loop in
  consuming processes (:meth:`Hub.drain_outbox`) sends due entries, the oldest of each session
  first, backing off from ``DeliveryPolicy.outbox_retry_s`` (30 s) doubling to
  ``outbox_retry_max_s`` (15 min), for at most ``outbox_max_age_s`` (a day); then the entry is
  given up (``hub.send_abandoned``, ``switchboard_send_abandoned_total``) and a session still
  with the bot is escalated to a human (reason ``undeliverable``). Claims are leased in the
  store, so two processes never send one entry at once. A permanent refusal (any other error)
  is logged and counted, never retried. Typing indicators never enter the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

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
    utcnow,
)
from bot.errors import (
    BackendUnavailable,
    ChannelUnavailable,
    ConfigError,
    Draining,
    RateLimited,
    SwitchboardError,
)
from bot.events import EventBus, HubEvent
from bot.handoff import Handoff
from bot.lanes.base import LaneConfig, LaneQueue
from bot.leader import PullReceivers
from bot.observability import Metrics
from bot.retrieval import Passage, Retriever
from bot.router import Router
from bot.store.base import NewMessage, OutboxEntry, Role, SessionMode, Store, StoredMessage
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

RETRYABLE_SEND_ERRORS: Final = (ChannelUnavailable, RateLimited, OSError)
"""Send errors worth another try (platform down, rate limited, network); others are refusals."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard the hub tries to deliver: inline retries, then the outbox.

    Attributes:
        send_attempts: inline retries after a failed first send.
        send_budget_s: seconds the inline retries may take in all.
        outbox_retry_s: seconds from putting an entry to its first outbox retry; the delay
            doubles with each failed retry (30, 60, 120... seconds).
        outbox_retry_max_s: the longest delay between two retries, in seconds.
        outbox_poll_s: seconds between two passes of the outbox loop.
        outbox_lease_s: seconds a claimed entry is reserved for this process (longer than a
            send may take); a process that dies leaves it due again after that.
        outbox_batch: most entries one claim takes (sent concurrently, one per session).
    """

    send_attempts: int = SEND_MAX_ATTEMPTS
    send_budget_s: float = SEND_MAX_SECONDS
    outbox_retry_s: float = 30.0
    outbox_retry_max_s: float = 15 * 60.0
    outbox_poll_s: float = 5.0
    outbox_lease_s: float = 120.0
    outbox_batch: int = 32

    def outbox_delay(self, attempts: int, error: BaseException | None = None) -> float:
        """Seconds to wait before the next outbox retry, after ``attempts`` failed retries.

        ``outbox_retry_s * 2**attempts``, at most ``outbox_retry_max_s``, and never less than a
        ``RateLimited.retry_after``.
        """
        delay = min(self.outbox_retry_max_s, self.outbox_retry_s * 2.0 ** min(attempts, 32))
        if isinstance(error, RateLimited):
            delay = max(delay, error.retry_after)
        return delay


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
        delivery: DeliveryPolicy | None = None,
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
        self.delivery = delivery or DeliveryPolicy()
        """Inline retries and the outbox's schedule."""
        self._outbox_loop_task: asyncio.Task[None] | None = None
        self._outbox_wake = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the event feed, the lanes (when consuming) and channels, then recover.

        Memory lanes: re-enqueue what was accepted but not handled. Shared lanes: start the
        recovery sweep (consuming processes; see the module docstring). Consuming processes
        also start the outbox loop, which sends what earlier sends (of any process) left.
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
        if self.consume:
            self._outbox_loop_task = asyncio.create_task(self._outbox_loop(), name="hub.outbox")
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
        if self._outbox_loop_task is not None:
            self._outbox_loop_task.cancel()  # an entry being sent is given back (due now)
            await asyncio.wait({self._outbox_loop_task})
            self._outbox_loop_task = None
        left = await self.lanes.drain(timeout)
        if self._background:  # escalations of undeliverable sessions
            _, late = await asyncio.wait(self._background, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
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

        Sending retries ``ChannelUnavailable`` and network errors with exponential backoff and
        honours ``RateLimited.retry_after`` (after the first attempt, at most
        ``delivery.send_attempts`` within ``delivery.send_budget_s`` seconds). A send that
        still fails that way goes to the outbox (:meth:`drain_outbox` sends it later), and so
        does, without a send, any message of a session that has outbox entries (FIFO per
        session). Any other send error is a refusal: logged and counted, not retried. The
        message stays stored and visible in the conversation history either way.

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
        """Send with inline retries; defer to the outbox what the platform did not take.

        Typing indicators are never deferred. A refusal (any error outside
        ``RETRYABLE_SEND_ERRORS``) is logged and counted.
        """
        deferrable = out.kind != OutboundKind.TYPING
        if deferrable and await self._behind_outbox(out):
            await self._defer(channel.name, out, None)
            return
        try:
            try:
                await channel.send(out)
            except RETRYABLE_SEND_ERRORS as exc:
                log.warning(
                    "hub.send_retrying",
                    extra={
                        "session_key": out.session_key,
                        "channel": channel.name,
                        "error": repr(exc),
                    },
                )
                await self._send_with_retries(channel, out, first_error=exc)
        except RETRYABLE_SEND_ERRORS as exc:
            if deferrable:
                await self._defer(channel.name, out, exc)
                return
            self.metrics.send_failures.labels(channel.name).inc()
            log.warning(
                "hub.send_failed",
                extra={
                    "session_key": out.session_key,
                    "channel": channel.name,
                    "error": repr(exc),
                },
            )
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
        """Retry a failed send: ``RateLimited.retry_after`` or exponential backoff.

        Raises:
            Exception: the last error when every retry failed.
        """
        if isinstance(first_error, RateLimited):
            await asyncio.sleep(max(0.0, first_error.retry_after))
        policy = self.delivery
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE_SEND_ERRORS),
            wait=_wait_for_send,
            stop=stop_after_attempt(policy.send_attempts) | stop_after_delay(policy.send_budget_s),
            reraise=True,
        ):
            with attempt:
                await channel.send(out)

    # --- the outbox ---------------------------------------------------------------------------
    async def _behind_outbox(self, out: OutboundMessage) -> bool:
        """True when ``out``'s session has outbox entries (it must queue behind them)."""
        try:
            return await self.store.outbox_pending(out.session_key)
        except SwitchboardError as exc:  # the store just wrote the message: rather send it
            log.warning(
                "hub.outbox_check_failed",
                extra={"session_key": out.session_key, "error": repr(exc)},
            )
            return False

    async def _defer(
        self, channel_name: str, out: OutboundMessage, error: Exception | None
    ) -> None:
        """Put ``out`` in the outbox: after a failed send (``error``) or behind earlier entries."""
        now = utcnow()
        due = (
            now if error is None else now + timedelta(seconds=self.delivery.outbox_delay(0, error))
        )
        extra: dict[str, Any] = {
            "session_key": out.session_key,
            "channel": channel_name,
            "idempotency_key": out.idempotency_key,
            "error": repr(error) if error is not None else None,
        }
        try:
            entry = await self.store.outbox_put(out, error=extra["error"], next_attempt_at=due)
        except SwitchboardError:
            self.metrics.send_failures.labels(channel_name).inc()
            log.exception("hub.send_failed", extra={**extra, "reason": "outbox_unavailable"})
            return
        self.metrics.outbox_deferred.labels(channel_name).inc()
        log.warning(
            "hub.send_deferred",
            extra={**extra, "outbox_id": entry.id, "behind": error is None},
        )
        if error is None:
            self._outbox_wake.set()  # its session's earlier entries are due now

    async def _outbox_loop(self) -> None:
        """Task boundary: run :meth:`drain_outbox` every ``outbox_poll_s`` seconds, or sooner."""
        while True:
            self._outbox_wake.clear()
            try:
                await self.drain_outbox()
            except SwitchboardError as exc:
                log.warning("hub.outbox_failed", extra={"error": repr(exc)})
            except Exception:
                log.exception("hub.outbox_failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.delivery.outbox_poll_s):
                    await self._outbox_wake.wait()

    async def drain_outbox(self) -> int:
        """One pass of the outbox loop: send every due entry, each session's oldest first.

        Claims due entries (one per session, leased for ``delivery.outbox_lease_s`` seconds),
        sends them concurrently, and claims again until nothing is due; a delivered entry lets
        its session's next one go in the same pass. A failed send is rescheduled with backoff
        (:meth:`DeliveryPolicy.outbox_delay`), or given up once the entry is older than
        ``settings.outbox_max_age_s``. Sets the ``switchboard_outbox_depth`` gauge.

        Returns:
            How many entries were delivered.

        Raises:
            bot.errors.BackendUnavailable: when the store cannot be read or written.
        """
        status = await self.store.outbox_status()
        self.metrics.outbox_depth.set(status.depth)
        if status.next_attempt_at is None or status.next_attempt_at > utcnow():
            return 0
        policy = self.delivery
        delivered = 0
        while entries := await self.store.outbox_claim(
            limit=policy.outbox_batch, lease_s=policy.outbox_lease_s
        ):
            results = await asyncio.gather(
                *(self._resend(e) for e in entries), return_exceptions=True
            )
            # Claim again when one was delivered (its session's next entry may go now) or the
            # claim was full; when every head failed, the rest waits for the next pass.
            more = any(r is True for r in results) or len(entries) >= policy.outbox_batch
            for entry, result in zip(entries, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    log.error(
                        "hub.outbox_entry_failed",
                        exc_info=result,
                        extra={"session_key": entry.session_key, "outbox_id": entry.id},
                    )
                elif result:
                    delivered += 1
            if not more:
                break
        return delivered

    async def _resend(self, entry: OutboxEntry) -> bool:
        """Send one claimed entry; True when delivered (the entry is then deleted)."""
        extra = {"session_key": entry.session_key, "channel": entry.channel, "outbox_id": entry.id}
        channel = self.channels.get(entry.channel)
        if channel is None:
            log.warning("hub.no_channel", extra=extra)
            await self._retry_later(entry, ChannelUnavailable(f"no channel {entry.channel!r}"))
            return False
        try:
            await channel.send(entry.message)
        except asyncio.CancelledError:
            # The hub is stopping: give the entry back now rather than after its lease.
            with contextlib.suppress(SwitchboardError):
                await self.store.outbox_reschedule(
                    entry, error="interrupted: the hub stopped", next_attempt_at=utcnow()
                )
            raise
        except RETRYABLE_SEND_ERRORS as exc:
            await self._retry_later(entry, exc)
            return False
        except Exception:
            self.metrics.send_failures.labels(entry.channel).inc()
            log.exception("hub.send_failed", extra={**extra, "attempts": entry.attempts + 1})
            await self.store.outbox_done(entry)
            return False
        await self.store.outbox_done(entry)
        self.metrics.messages_out.labels(entry.channel, str(entry.message.kind)).inc()
        log.info("hub.outbox_delivered", extra={**extra, "attempts": entry.attempts + 1})
        return True

    async def _retry_later(self, entry: OutboxEntry, exc: Exception) -> None:
        """Reschedule a failed entry with backoff, or give it up when it is too old."""
        now = utcnow()
        expires = entry.created_at + timedelta(seconds=self.settings.outbox_max_age_s)
        if now >= expires:
            await self._abandon(entry, exc)
            return
        delay = self.delivery.outbox_delay(entry.attempts + 1, exc)
        due = min(now + timedelta(seconds=delay), expires)  # one last try when it expires
        if await self.store.outbox_reschedule(entry, error=repr(exc), next_attempt_at=due):
            log.warning(
                "hub.send_retry_scheduled",
                extra={
                    "session_key": entry.session_key,
                    "channel": entry.channel,
                    "outbox_id": entry.id,
                    "attempts": entry.attempts + 1,
                    "next_attempt_at": due.isoformat(),
                    "error": repr(exc),
                },
            )

    async def _abandon(self, entry: OutboxEntry, exc: Exception) -> None:
        """Give up an expired entry; escalate its session to a human if the bot still has it."""
        if not await self.store.outbox_done(entry):
            return  # the claim was lost: the process that holds it decides
        self.metrics.send_abandoned.labels(entry.channel).inc()
        log.error(
            "hub.send_abandoned",
            extra={
                "session_key": entry.session_key,
                "channel": entry.channel,
                "outbox_id": entry.id,
                "idempotency_key": entry.message.idempotency_key,
                "attempts": entry.attempts + 1,
                "age_s": (utcnow() - entry.created_at).total_seconds(),
                "error": repr(exc),
            },
        )
        conv = await self.store.conversation(entry.session_key)
        if conv is not None and conv.mode is SessionMode.BOT:
            self._spawn(self._escalate_undeliverable(entry.session_key), "hub.escalate")

    async def _escalate_undeliverable(self, key: SessionKey) -> None:
        """Task boundary: hand a session whose answers cannot be delivered to a human."""
        try:
            await self.handoff.escalate(key, "undeliverable")
        except Exception:
            log.exception("hub.escalation_failed", extra={"session_key": key})

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` in the background; :meth:`stop` waits for it (bounded)."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
    delivery: DeliveryPolicy | None = None,
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
        delivery: inline send retries and the outbox's schedule (default
            :class:`DeliveryPolicy`).

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
        from bot.agent.scripted import ScriptedAgent

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
        delivery=delivery,
    )
