"""The outbox: answers a platform did not take, sent later in order, or given up and escalated.

A send that still fails after the inline retries is put in the store's outbox; while a session
has outbox entries its later messages queue behind them (FIFO per session: answer 2 never
overtakes answer 1). A loop in consuming processes (:meth:`Outbox.drain`) sends due entries,
the oldest of each session first, backing off from ``DeliveryPolicy.outbox_retry_s`` doubling
to ``outbox_retry_max_s``, for at most ``settings.outbox_max_age_s``; then the entry is given up
(``hub.send_abandoned``, ``switchboard_send_abandoned_total``) and a session still with the bot
is escalated to a human (reason ``undeliverable``). Claims are leased in the store, so two
processes never send one entry at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from typing import Any

from bot.channel import ChannelPlugin
from bot.config import Settings
from bot.envelope import OutboundMessage, SessionKey, utcnow
from bot.errors import ChannelUnavailable, SwitchboardError
from bot.handoff import Handoff
from bot.hub.policy import RETRYABLE_SEND_ERRORS, DeliveryPolicy
from bot.observability import Metrics
from bot.store.base import OutboxEntry, SessionMode, Store

log = logging.getLogger(__name__)


class Outbox:
    """Defers outbound messages to the store's outbox and sends them again.

    Args:
        settings: ``outbox_max_age_s``, the age after which an entry is given up.
        store: the outbox entries, their claims and leases.
        channels: channel plugins by name (the same mapping the hub holds).
        metrics: deferred, delivered, failed and abandoned counters; the depth gauge.
        policy: the outbox's schedule (poll, lease, batch, backoff).
        handoff: escalates sessions whose answers cannot be delivered.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        channels: Mapping[str, ChannelPlugin],
        metrics: Metrics,
        policy: DeliveryPolicy,
        handoff: Handoff,
    ) -> None:
        self.settings = settings
        self.store = store
        self.channels = channels
        self.metrics = metrics
        self.policy = policy
        self.handoff = handoff
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- putting entries ----------------------------------------------------------------------
    async def behind(self, out: OutboundMessage) -> bool:
        """True when ``out``'s session has outbox entries (it must queue behind them)."""
        try:
            return await self.store.outbox_pending(out.session_key)
        except SwitchboardError as exc:  # the store just wrote the message: rather send it
            log.warning(
                "hub.outbox_check_failed",
                extra={"session_key": out.session_key, "error": repr(exc)},
            )
            return False

    async def defer(
        self, channel_name: str, out: OutboundMessage, error: Exception | None
    ) -> None:
        """Put ``out`` in the outbox: after a failed send (``error``) or behind earlier entries.

        A store that cannot take the entry is logged and counted as a send failure.
        """
        now = utcnow()
        due = now if error is None else now + timedelta(seconds=self.policy.outbox_delay(0, error))
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
            self._wake.set()  # its session's earlier entries are due now

    # --- the loop -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop that sends due entries (consuming processes)."""
        self._loop = asyncio.create_task(self._drain_loop(), name="hub.outbox")

    async def stop(self) -> None:
        """Stop the loop, if it runs; an entry being sent is given back (due now)."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.wait({self._loop})
            self._loop = None

    async def finish_escalations(self, timeout_s: float) -> None:
        """Wait for escalations of undeliverable sessions, cancelling those past ``timeout_s``."""
        if self._background:
            _, late = await asyncio.wait(self._background, timeout=timeout_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def _drain_loop(self) -> None:
        """Task boundary: run :meth:`drain` every ``outbox_poll_s`` seconds, or sooner."""
        while True:
            self._wake.clear()
            try:
                await self.drain()
            except SwitchboardError as exc:
                log.warning("hub.outbox_failed", extra={"error": repr(exc)})
            except Exception:
                log.exception("hub.outbox_failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.policy.outbox_poll_s):
                    await self._wake.wait()

    async def drain(self) -> int:
        """One pass of the outbox loop: send every due entry, each session's oldest first.

        Claims due entries (one per session, leased for ``policy.outbox_lease_s`` seconds),
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
        policy = self.policy
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

    # --- one entry ----------------------------------------------------------------------------
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
        delay = self.policy.outbox_delay(entry.attempts + 1, exc)
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
        """Run ``coro`` in the background; :meth:`finish_escalations` waits for it (bounded)."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
