"""Long polling: fetch updates with ``getUpdates`` and hand each batch to a handler.

Fetching is kept apart from dispatching (as in python-telegram-bot's ``Updater``): the
:class:`Poller` only calls ``Bot.get_updates`` (https://core.telegram.org/bots/api#getupdates)
and passes each batch to ``handle``. The next call's ``offset`` (the last ``update_id`` + 1)
confirms a batch to Telegram, and it is sent only after ``handle`` returned, i.e. after every
update of the batch was ingested: a crash re-fetches the batch, and the hub's dedupe by
``update_id`` drops what was already stored.

Network errors back off exponentially with jitter (tenacity), ``RetryAfter`` waits as long as
Telegram asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from telegram import Bot, Update
from telegram.error import RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)

HANDLER_RETRY_S = 1.0
"""Seconds to wait before fetching a batch again after its handler failed."""
STOP_GRACE_S = 10.0
"""Seconds :meth:`Poller.stop` lets a batch being handled finish before cancelling it."""

BatchHandler = Callable[[Sequence[Update]], Awaitable[None]]

ALLOWED_UPDATES = ("message", "edited_message", "callback_query")
"""Update types the channel asks Telegram for (webhook and polling alike)."""


def retry_after_seconds(exc: RetryAfter) -> float:
    """``RetryAfter.retry_after`` in seconds (an int or a timedelta, depending on PTB's mode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


class Poller:
    """A ``getUpdates`` loop.

    Args:
        bot: an initialized PTB ``Bot``.
        handle: called with each non-empty batch, in order; the batch is confirmed only
            after it returns. An exception stops nothing: the batch is fetched again.
        timeout_s: long-poll timeout in seconds sent to Telegram.
    """

    def __init__(self, bot: Bot, handle: BatchHandler, *, timeout_s: float = 25.0) -> None:
        self._bot = bot
        self._handle = handle
        self.timeout_s = timeout_s
        self.offset: int | None = None
        self._sent_offset: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=30.0)

    def start(self) -> None:
        """Start the loop as a task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="telegram-poller")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the loop; a batch being handled may finish first (up to ``grace_s`` seconds).

        Then the task is cancelled: a running long poll is abandoned and its batch is not
        confirmed, so Telegram sends it again to the next poller. Batches already handled are
        confirmed with a last ``getUpdates(offset, timeout=0)``, so a poller taking over does
        not fetch them again (if that call fails, it does, and the hub's dedupe drops them).
        """
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self.offset is not None and self.offset != self._sent_offset:
            try:
                async with asyncio.timeout(5.0):
                    await self._bot.get_updates(offset=self.offset, timeout=0, limit=1)
                self._sent_offset = self.offset
            except (TelegramError, TimeoutError) as exc:
                log.warning(
                    "telegram.confirm_failed", extra={"channel": "telegram", "error": repr(exc)}
                )

    async def _run(self) -> None:
        while True:
            batch = await self._fetch()
            if not batch:
                continue
            self._idle.clear()
            try:
                await self._handle(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # the task boundary: the batch stays unconfirmed, fetch again
                log.exception(
                    "telegram.batch_failed",
                    extra={"channel": "telegram", "event_id": str(batch[0].update_id)},
                )
                await asyncio.sleep(HANDLER_RETRY_S)
                continue
            finally:
                self._idle.set()
            self.offset = batch[-1].update_id + 1

    async def _fetch(self) -> tuple[Update, ...]:
        """One ``getUpdates`` call, retried for ever on Telegram and network errors."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TelegramError),
            wait=self._wait,
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                self._sent_offset = self.offset
                return await self._bot.get_updates(
                    offset=self.offset,
                    timeout=int(self.timeout_s),
                    read_timeout=self.timeout_s + 10.0,
                    allowed_updates=list(ALLOWED_UPDATES),
                )
        raise AssertionError("unreachable: AsyncRetrying retries for ever")

    def _wait(self, state: RetryCallState) -> float:
        """``RetryAfter`` as Telegram asks; exponential backoff with jitter otherwise."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryAfter):
            return retry_after_seconds(exc)
        return float(self._backoff(state))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else None
    log.warning(
        "telegram.poll_failed",
        extra={"channel": "telegram", "error": repr(exc), "retry_in_s": delay},
    )
