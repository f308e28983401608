"""Streamed answers: a throttled series of edits of one message on a streaming channel.

The agent reports the answer text so far many times a second (one call per model delta); a
platform takes far fewer edits (Slack's ``chat.update`` is a Tier 3 method, about 50 calls a
minute). :class:`AnswerStream` sits between the two: :meth:`AnswerStream.push` only records the
newest text and wakes one pump task, which shows it with
:meth:`~bot.channel.StreamingChannel.stream`:

- coalescing: only the newest text is shown; texts pushed meanwhile are skipped;
- at most one edit in flight per answer, and at least ``interval_s`` seconds between the starts
  of two edits (the first one, which posts the message, goes out at once);
- tiny changes (fewer than :data:`MIN_DELTA_CHARS` characters appended) wait for more text;
- a failing edit (429, network, refusal) is logged and never fails the turn; after a 429 no
  edit is tried before its ``Retry-After`` has passed;
- :meth:`AnswerStream.close` ends the stream before the final answer is sent: it stops the pump
  and waits for an edit in flight, so a late partial edit can never overwrite the final answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bot.channel import StreamingChannel
from bot.envelope import OutboundMessage
from bot.errors import RateLimited, SwitchboardError

log = logging.getLogger(__name__)

MIN_DELTA_CHARS = 8
"""An edit that only appends fewer characters than this waits for more text."""

SETTLE_TIMEOUT_S = 10.0
"""Seconds :meth:`AnswerStream.close` waits for an edit in flight before cancelling it."""


class AnswerStream:
    """Shows one answer while it is written, as throttled edits of one message.

    Args:
        channel: the session's channel (it has the streaming capability).
        template: the answer's envelope: ``session_key``, ``reply_to``, ``kind`` and the
            ``idempotency_key`` that names the streamed message; its ``text`` is replaced.
        interval_s: minimum seconds between the starts of two edits.
        clock: monotonic time in seconds (tests may pass their own).

    Attributes:
        edits: calls of ``channel.stream`` that succeeded (the first one posted).
        failures: calls that failed (logged, not raised).
    """

    def __init__(
        self,
        channel: StreamingChannel,
        template: OutboundMessage,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if template.idempotency_key is None:
            raise ValueError("a streamed answer needs an idempotency_key")
        self.channel = channel
        self.template = template
        self.interval_s = max(0.0, interval_s)
        self.edits = 0
        self.failures = 0
        self._clock = clock
        self._pending: str | None = None
        self._shown = ""
        self._attempted = False
        self._not_before = 0.0
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._extra = {
            "session_key": template.session_key,
            "event_id": template.reply_to,
            "idempotency_key": template.idempotency_key,
        }

    @property
    def attempted(self) -> bool:
        """True once an edit was tried (a partial message may exist on the platform)."""
        return self._attempted

    @property
    def shown(self) -> str:
        """The text of the last partial edit that succeeded ("" before the first)."""
        return self._shown

    async def push(self, text: str) -> None:
        """Record the answer so far (the agent's ``StreamFn``); never waits for the network.

        Args:
            text: the cumulative answer text (CommonMark), as the agent's stream reports it.
        """
        if self._closed.is_set() or not text.strip():
            return
        self._pending = text
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name="answer-stream")
        self._wake.set()

    async def close(self) -> None:
        """End the stream: no edit starts after this; an edit in flight is awaited.

        An edit still in flight after :data:`SETTLE_TIMEOUT_S` seconds is cancelled. Call it
        before sending the final answer. Idempotent.
        """
        self._closed.set()
        self._wake.set()
        pump = self._pump
        if pump is None or pump.done():
            return
        done, _ = await asyncio.wait({pump}, timeout=SETTLE_TIMEOUT_S)
        if not done:
            log.warning("stream.settle_timeout", extra=self._extra)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def discard(self) -> None:
        """Close the stream and remove its partial message (no final answer will come).

        Failures are logged, never raised.
        """
        await self.close()
        if not self._attempted:
            return
        try:
            await self.channel.discard_stream(self.template.model_copy(update={"text": ""}))
        except SwitchboardError as exc:
            log.warning("stream.discard_failed", extra={**self._extra, "error": repr(exc)})
        except Exception:  # task boundary: the turn must not fail on a cosmetic cleanup
            log.exception("stream.discard_failed", extra=self._extra)

    # --- the pump -----------------------------------------------------------------------------
    async def _run(self) -> None:
        """Task boundary: show pending text, one edit at a time, until closed."""
        while not self._closed.is_set():
            await self._wake.wait()
            self._wake.clear()
            delay = self._not_before - self._clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), delay)
            if self._closed.is_set():
                return
            text = self._pending
            if text is None or not self._worth_an_edit(text):
                continue
            self._pending = None
            await self._edit(text)

    def _worth_an_edit(self, text: str) -> bool:
        shown = self._shown
        if text == shown:
            return False
        return not (shown and text.startswith(shown) and len(text) - len(shown) < MIN_DELTA_CHARS)

    async def _edit(self, text: str) -> None:
        started = self._clock()
        self._not_before = started + self.interval_s
        self._attempted = True
        try:
            await self.channel.stream(self.template.model_copy(update={"text": text}))
        except RateLimited as exc:
            self.failures += 1
            self._not_before = max(self._not_before, self._clock() + exc.retry_after)
            if self._pending is None:
                self._pending = text  # show it (or newer text) once the wait is over
                self._wake.set()
            log.warning(
                "stream.rate_limited", extra={**self._extra, "retry_after": exc.retry_after}
            )
        except SwitchboardError as exc:
            self.failures += 1
            log.warning("stream.edit_failed", extra={**self._extra, "error": repr(exc)})
        except Exception:  # task boundary: a partial edit never fails the turn
            self.failures += 1
            log.exception("stream.edit_failed", extra=self._extra)
        else:
            self.edits += 1
            self._shown = text
