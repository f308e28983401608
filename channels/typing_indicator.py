"""A typing indicator kept up while a turn runs, for platforms that show one for a few seconds.

Discord shows "typing…" for about 10 seconds after ``POST /channels/{id}/typing``, Teams for
about 3 seconds after a ``typing`` activity; while the hub composes an answer (its ``typing``
event) the channel renews it every ``interval_s`` until the reply is sent, the indicator is
stopped, or ``timeout_s`` (the turn timeout) passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.envelope import SessionKey

log = logging.getLogger(__name__)


class TypingIndicators:
    """One renewing typing indicator per session.

    Args:
        show: shows the indicator once for a session; answers False when the session cannot
            show one (no conversation known), which ends its indicator. Its errors end the
            indicator too (logged as ``{channel}.typing_failed``).
        interval_s: seconds between two ``show`` calls.
        timeout_s: an indicator ends after this many seconds at the latest.
        channel: the channel name, for logs.
    """

    def __init__(
        self,
        show: Callable[[SessionKey], Awaitable[bool]],
        *,
        interval_s: float,
        timeout_s: float,
        channel: str,
    ) -> None:
        self._show = show
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.channel = channel
        self._tasks: dict[SessionKey, asyncio.Task[None]] = {}

    def start(self, key: SessionKey) -> None:
        """Show the indicator of ``key`` until :meth:`stop` (nothing when it runs already)."""
        running = self._tasks.get(key)
        if running is not None and not running.done():
            return
        self._tasks[key] = asyncio.create_task(self._repeat(key))

    def stop(self, key: SessionKey) -> None:
        """Stop renewing the indicator of ``key`` (the platform hides it by itself)."""
        task = self._tasks.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def close(self) -> None:
        """Stop every indicator and wait until they ended."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _repeat(self, key: SessionKey) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        try:
            while loop.time() < deadline:
                if not await self._show(key):
                    return
                await asyncio.sleep(self.interval_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # an indicator's boundary: the reply itself is not affected
            log.warning(
                f"{self.channel}.typing_failed",
                exc_info=True,
                extra={"channel": self.channel, "session_key": key},
            )
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
