"""Data-subject requests on the Redis lanes: what waits there about one customer, and its purge.

What Redis holds about a customer (``P`` the prefix; see :mod:`bot.lanes.redis.keys`):

- ``{P:<session>}:q``: each waiting or running message, the whole envelope (text, sender id,
  name, e-mail, the platform payload); ``{P:<session>}:h``: the lane state, with the session
  key in the key's name (a direct conversation's key holds the platform user id) and, for a
  key with braces, in its field ``sk``.
- ``{P}:ready``, ``{P}:delayed``, ``{P}:slots``, ``{P}:held``: session keys while a turn waits
  or runs.
- every other key under a session's hash tag, ``{P:<session>}:*``: the hub's enqueue marks and
  recovery claims (``:m:<channel>:<account>:<event id>``, ``:c:...``, see
  :class:`bot.events_redis.EnqueueMarks`), one per message for a day.

Pub/sub messages (the wake channel, the event feed) are not stored. In a worker's memory: the
turns it runs (their messages, until they end: erasure waits for them), the sessions it touched
(session keys, forgotten when their lane goes idle, or evicted past 100,000) and global
operations not yet sent (session keys, for milliseconds).

:meth:`LanePurger.queued` reads every session list (one ``SCAN``, then ``LRANGE`` and
``HMGET`` per list, pipelined). :meth:`LanePurger.purge` runs ``S_PURGE`` on each lane the
request touches: the subject's own lanes lose every entry (``'a'``), other lanes lose their
entries and have the entries naming them rewritten (``'s'``, by exact entry, so a message
enqueued or answered meanwhile is left alone). The script is atomic on the session's slot and
keeps the state machine of :mod:`bot.lanes.redis.scripts` whole: a turn whose lease is alive
keeps its entries (reported ``in_flight``: the caller purges again once it ended, so nothing
erased is answered later), a lane left empty loses both keys, and ``G_FORGET`` then takes the
session out of the global structures and corrects the counters. A session that got a new
message in between is put back by ``G_SWEEP`` (re-added only where no global structure holds
it, so never twice). Other sessions' lanes, turns and places in the ready order are untouched.

With ``final`` the purge also deletes the other keys under the subject's own sessions' tags
(one ``SCAN`` of the prefix): only once the database no longer holds their messages, or
recovery, which re-enqueues stored unanswered messages without a mark, would run them again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from bot.envelope import InboundMessage, SessionKey
from bot.errors import BackendUnavailable
from bot.lanes.base import LanePurge, LaneSelection, QueuedEntry
from bot.lanes.redis.batcher import LaneScripts
from bot.lanes.redis.client import UNAVAILABLE, Client, connect
from bot.lanes.redis.keys import LaneKeys

logger = logging.getLogger("bot.lanes.redis")

SCAN_COUNT = 1000
"""Keys one ``SCAN`` step looks at (per node)."""
PIPELINE = 256
"""Commands per pipelined round trip when reading lists."""


def _glob(text: str) -> str:
    """``text`` as a literal inside a ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class LanePurger:
    """Reads and purges one prefix's lanes for data-subject requests (module docstring).

    Args:
        client: a client of the lanes' server or cluster.
        scripts: the lane scripts registered on it.
        keys: the prefix's key names.
    """

    def __init__(self, client: Client, scripts: LaneScripts, keys: LaneKeys) -> None:
        self.client = client
        self._scripts = scripts
        self._keys = keys
        self._owned = False

    @classmethod
    def connect(cls, url: str, *, prefix: str = "sb") -> LanePurger:
        """A purger with a client of its own (``switchboard customer erase``); :meth:`close` it.

        Raises:
            ValueError: for an invalid URL or prefix.
        """
        client = connect(url)
        purger = cls(client, LaneScripts(client), LaneKeys(prefix))
        purger._owned = True
        return purger

    async def close(self) -> None:
        """Close the client if :meth:`connect` made it."""
        if self._owned:
            await self.client.aclose()

    # --- reading ------------------------------------------------------------------------------

    async def _lists(self) -> list[str]:
        """Every session list of the prefix (``SCAN``; look-alike keys are skipped when read)."""
        pattern = "{" + _glob(self._keys.prefix) + ":*}:q"
        return [str(k) async for k in self.client.scan_iter(match=pattern, count=SCAN_COUNT)]

    async def _read(self, lists: list[str]) -> list[tuple[str, list[str], list[Any]]]:
        """``(list key, entries, [st, run])`` of each list (pipelined, not atomic per lane)."""
        out: list[tuple[str, list[str], list[Any]]] = []
        for i in range(0, len(lists), PIPELINE):
            batch = lists[i : i + PIPELINE]
            pipe = self.client.pipeline(transaction=False)
            for q in batch:
                pipe.lrange(q, 0, -1)
                pipe.hmget(q[: -len(":q")] + ":h", "st", "run")
            replies = await pipe.execute(raise_on_error=False)
            for j, q in enumerate(batch):
                entries, state = replies[2 * j], replies[2 * j + 1]
                if isinstance(entries, list) and isinstance(state, list):
                    out.append((q, [str(e) for e in entries], state))
        return out

    async def queued(self, select: LaneSelection) -> list[QueuedEntry]:
        """The entries ``select`` is about, in every lane of the prefix (module docstring).

        Raises:
            bot.errors.BackendUnavailable: when Redis cannot be reached.
        """
        try:
            lanes = await self._read(await self._lists())
        except UNAVAILABLE as exc:
            raise BackendUnavailable(f"redis lanes unavailable: {exc}") from exc
        out: list[QueuedEntry] = []
        for _, entries, (st, run) in lanes:
            running = int(run or 0) if st == "A" else 0
            for i, entry in enumerate(entries):
                msg = InboundMessage.model_validate_json(entry[1:])
                match, _ = select.match(msg)
                if match != "other":
                    out.append(QueuedEntry(msg, match, i < running))
        return out

    # --- purging ------------------------------------------------------------------------------

    async def purge(self, select: LaneSelection, *, final: bool = False) -> LanePurge:
        """Purge every lane of the prefix for ``select`` (see the module docstring).

        Raises:
            bot.errors.BackendUnavailable: when Redis cannot be reached.
        """
        try:
            return await self._purge(select, final)
        except UNAVAILABLE as exc:
            raise BackendUnavailable(f"redis lanes unavailable: {exc}") from exc

    async def _purge(self, select: LaneSelection, final: bool) -> LanePurge:
        calls: list[tuple[str, list[str], list[str]]] = [
            (session, self._keys.session(session), ["a"]) for session in select.sessions
        ]
        own = {tuple(keys) for _, keys, _ in calls}
        for q, entries, _ in await self._read(await self._lists()):
            keys = LaneKeys.session_keys_of_hash(q[: -len(":q")] + ":h")
            if tuple(keys) in own:
                continue
            pairs: list[str] = []
            session = ""
            for entry in entries:
                msg = InboundMessage.model_validate_json(entry[1:])
                session = msg.session_key
                match, new = select.match(msg)
                if match == "theirs":
                    pairs += [entry, ""]
                elif match == "mentions":
                    pairs += [entry, entry[0] + new.model_dump_json()]
            if pairs:
                calls.append((session, keys, ["s", *pairs]))
        removed = scrubbed = in_flight = queued = lanes = gone = 0
        dropped: list[str] = []
        for session, keys, args in calls:
            r, s, f, emptied, counted = (
                int(x) for x in await self._scripts.run("S_PURGE", keys, args)
            )
            removed, scrubbed, in_flight = removed + r, scrubbed + s, in_flight + f
            queued, lanes, gone = queued - r, lanes + counted, gone + emptied
            if emptied or args == ["a"]:
                dropped.append(session)
        if dropped or queued or lanes:
            await self._scripts.run("G_FORGET", self._keys.global_keys, [queued, lanes, *dropped])
            await self._resweep(dropped)
        deleted = await self._forget_tags(select.sessions) if final else 0
        if removed or scrubbed or deleted:
            logger.info(
                "lane.purged",
                extra={"removed": removed, "scrubbed": scrubbed, "lanes": len(dropped)},
            )
        return LanePurge(
            removed=removed,
            scrubbed=scrubbed,
            lanes_dropped=gone,
            in_flight=in_flight,
            keys_deleted=deleted,
        )

    async def _resweep(self, sessions: list[str]) -> None:
        """Put back the sessions of ``sessions`` that got a message while they were purged."""
        if not sessions:
            return
        pipe = self.client.pipeline(transaction=False)
        for session in sessions:
            pipe.llen(self._keys.session(session)[0])
        lengths = await pipe.execute()
        back = [s for s, n in zip(sessions, lengths, strict=True) if int(n)]
        if back:
            await self._scripts.run("G_SWEEP", self._keys.global_keys, [self._keys.channel, *back])

    async def _forget_tags(self, sessions: Iterable[SessionKey]) -> int:
        """Delete every key under the hash tags of ``sessions`` but their lanes (one ``SCAN``)."""
        tags = {self._keys.tag(s) for s in sessions}
        if not tags:
            return 0
        lanes = {k for s in sessions for k in self._keys.session(s)}
        pattern = "{" + _glob(self._keys.prefix) + ":*"
        doomed: list[str] = []
        async for raw in self.client.scan_iter(match=pattern, count=SCAN_COUNT):
            key = str(raw)
            tag, sep, _ = key.partition("}:")
            if sep and tag + "}" in tags and key not in lanes:
                doomed.append(key)
        for i in range(0, len(doomed), PIPELINE):
            pipe = self.client.pipeline(transaction=False)
            for key in doomed[i : i + PIPELINE]:  # one DEL each: tags are on different slots
                pipe.delete(key)
            await pipe.execute()
        return len(doomed)
