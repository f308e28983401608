"""Albums: the updates of one ``media_group_id`` become ONE envelope, so ONE turn.

Telegram delivers an album (several photos or documents sent together) as one ``Update`` per
item, all with the same ``media_group_id`` and no marker of the last item. Ingesting them one by
one would start a turn on the first photo and answer again for the rest (whether the lane folds
them depends on the queue mode and on timing), so the channel buffers the parts briefly
instead: a group is ingested as one envelope (:func:`~channels.telegram.translate
.merge_media_group`) once no new part arrived for ``window_s`` seconds, or at once when another
message of the same session arrives (order within a session is kept).

Nothing is acknowledged early: every part's webhook request (or getUpdates batch) waits on the
group's future, which resolves only after ``hub.ingest`` returned; if ingest fails, every part's
request fails and Telegram redelivers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.envelope import InboundMessage, SessionKey
from channels.telegram.translate import merge_media_group

IngestFn = Callable[[InboundMessage, list[str]], Awaitable[None]]
"""Ingests the merged envelope; gets the event ids (update ids) of every part."""


@dataclass
class _Group:
    session_key: SessionKey
    future: asyncio.Future[None]
    parts: list[InboundMessage] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class MediaGroupBuffer:
    """Collects album parts by ``media_group_id`` and ingests each album once.

    Args:
        ingest: called with the merged envelope and the parts' event ids.
        window_s: quiet time in seconds after the last part before the album is ingested.
    """

    def __init__(self, ingest: IngestFn, *, window_s: float) -> None:
        self._ingest = ingest
        self.window_s = window_s
        self._groups: dict[str, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, media_group_id: str, part: InboundMessage) -> asyncio.Future[None]:
        """Add one part; returns the album's future (done once the album was ingested)."""
        loop = asyncio.get_running_loop()
        group = self._groups.get(media_group_id)
        if group is None:
            group = _Group(part.session_key, loop.create_future())
            self._groups[media_group_id] = group
        group.parts.append(part)
        if group.timer is not None:
            group.timer.cancel()
        group.timer = loop.call_later(self.window_s, self._fire, media_group_id)
        return group.future

    def pending(self) -> int:
        """Albums waiting for their quiet window."""
        return len(self._groups)

    def _fire(self, media_group_id: str) -> None:
        task = asyncio.create_task(self._flush(media_group_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, media_group_id: str) -> None:
        group = self._groups.pop(media_group_id, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        parts = sorted(group.parts, key=lambda p: (len(p.event_id), p.event_id))
        try:
            await self._ingest(merge_media_group(parts), [p.event_id for p in parts])
        except asyncio.CancelledError:
            group.future.cancel()
            raise
        except Exception as exc:
            if not group.future.done():
                group.future.set_exception(exc)
                # Every waiting request re-raises it; mark it retrieved so an album whose
                # requests all went away does not log "exception was never retrieved".
                group.future.exception()
            return
        if not group.future.done():
            group.future.set_result(None)

    async def flush_session(self, key: SessionKey) -> None:
        """Ingest the pending albums of one session now (before a newer message of it)."""
        for gid in [gid for gid, g in self._groups.items() if g.session_key == key]:
            await self._flush(gid)  # errors go to the album's own requests

    async def close(self) -> None:
        """Ingest every pending album now and wait for running flushes."""
        for gid in list(self._groups):
            await self._flush(gid)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
