"""The one door out: store (idempotent), publish, send through the session's channel with retries.

A send that fails with a retryable error (``RETRYABLE_SEND_ERRORS``) is retried inline with
exponential backoff, honouring ``RateLimited.retry_after``; what still fails goes to the outbox
(:mod:`bot.hub.outbox`). Any other send error is a refusal: logged and counted, never retried.
Typing indicators never enter the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from bot import tracing
from bot.channel import ChannelPlugin
from bot.envelope import OutboundKind, OutboundMessage, channel_of
from bot.errors import RateLimited
from bot.events import EventBus, HubEvent
from bot.hub.ingest import IngestTimes
from bot.hub.outbox import Outbox
from bot.hub.policy import RETRYABLE_SEND_ERRORS, DeliveryPolicy
from bot.observability import Metrics
from bot.store.base import NewMessage, Role, Store, StoredMessage
from bot.tracing import Span

log = logging.getLogger(__name__)

_ROLE_OF_KIND = {
    OutboundKind.ANSWER: Role.BOT,
    OutboundKind.NOTICE: Role.SYSTEM,
    OutboundKind.HANDOFF: Role.SYSTEM,
    OutboundKind.AGENT: Role.AGENT,
    OutboundKind.TYPING: Role.SYSTEM,
}


def _wait_for_send(state: RetryCallState) -> float:
    """Honour ``RateLimited.retry_after``; back off exponentially otherwise (seconds)."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RateLimited):
        return max(0.0, exc.retry_after)
    return float(wait_exponential_jitter(multiplier=0.5, max=10.0)(state))


class Egress:
    """Delivers outbound messages.

    Args:
        store: where every outbound message is kept (idempotent by ``idempotency_key``).
        events: the live feed the ``message`` event goes to.
        channels: channel plugins by name (the same mapping the hub holds).
        metrics: sent and failed counters, the ingest-to-answer latency histogram.
        policy: the inline retries.
        outbox: where what the platform did not take goes.
        times: ingest times of the messages answers reply to.
    """

    def __init__(
        self,
        *,
        store: Store,
        events: EventBus,
        channels: Mapping[str, ChannelPlugin],
        metrics: Metrics,
        policy: DeliveryPolicy,
        outbox: Outbox,
        times: IngestTimes,
    ) -> None:
        self.store = store
        self.events = events
        self.channels = channels
        self.metrics = metrics
        self.policy = policy
        self.outbox = outbox
        self.times = times

    async def deliver(self, out: OutboundMessage) -> StoredMessage:
        """Store an outbound message, publish it, and send it through its channel.

        Sending retries ``ChannelUnavailable`` and network errors with exponential backoff and
        honours ``RateLimited.retry_after`` (after the first attempt, at most
        ``policy.send_attempts`` within ``policy.send_budget_s`` seconds). A send that still
        fails that way goes to the outbox, and so does, without a send, any message of a
        session that has outbox entries (FIFO per session). Any other send error is a refusal:
        logged and counted, not retried. The message stays stored and visible in the
        conversation history either way.

        Returns:
            The stored message (the earlier one when ``idempotency_key`` was delivered before;
            then nothing is sent again).
        """
        with tracing.span(Span.DELIVER, attributes={"switchboard.kind": str(out.kind)}):
            return await self._deliver(out)

    async def _deliver(self, out: OutboundMessage) -> StoredMessage:
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
            t0 = self.times.pop(out.session_key, out.reply_to)
            if t0 is not None:
                self.metrics.hub_latency_seconds.observe(time.monotonic() - t0)
        return stored

    async def _send(self, channel: ChannelPlugin, out: OutboundMessage) -> None:
        """Send with inline retries; defer to the outbox what the platform did not take.

        Typing indicators are never deferred. A refusal (any error outside
        ``RETRYABLE_SEND_ERRORS``) is logged and counted.
        """
        deferrable = out.kind != OutboundKind.TYPING
        if deferrable and await self.outbox.behind(out):
            await self.outbox.defer(channel.name, out, None)
            return
        try:
            try:
                with tracing.span(
                    Span.PLATFORM_SEND, attributes={"messaging.system": channel.name}
                ):
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
                await self.outbox.defer(channel.name, out, exc)
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
        policy = self.policy
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE_SEND_ERRORS),
            wait=_wait_for_send,
            stop=stop_after_attempt(policy.send_attempts) | stop_after_delay(policy.send_budget_s),
            reraise=True,
        ):
            with attempt:
                await channel.send(out)
