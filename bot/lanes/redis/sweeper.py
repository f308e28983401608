"""The stuck-session sweeper: puts back sessions that a crash left out of every global structure.

A crash between a session script (``S_ENQUEUE``, ``S_ACK``...) and the global step that should
follow it leaves a session whose hash says it is ready but that no global structure (ready,
delayed, slots, held) holds: nobody would ever claim it. Each consumer runs a sweeper every
``sweep_s`` seconds: a bounded ``SCAN`` of session hashes, one ``S_STUCK`` script per
session, one ``G_SWEEP`` to re-add those that no global structure holds (logged as
``lane.swept``). It costs no round trip per message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster

from bot.lanes.redis.batcher import LaneScripts
from bot.lanes.redis.client import RECONNECT_BACKOFF, Client, unavailable
from bot.lanes.redis.keys import LaneKeys

logger = logging.getLogger("bot.lanes.redis")


MAX_SCAN_STEPS = 50
"""Most ``SCAN`` steps (``COUNT batch`` each, per node) one sweeper round makes."""


class Sweeper:
    """Finds and re-adds lost sessions (see the module docstring).

    Args:
        client: the lanes' client.
        scripts: the lane scripts (``S_STUCK``, ``G_SWEEP``).
        keys: the key names.
        wake: set when sessions were re-added (the global loop claims them).
        interval_s: seconds between two rounds.
        batch: session hashes one round looks at (``SCAN COUNT`` per node).
        age_s: seconds a session must have been ready (or its lease expired) before it is
            considered lost.
        worker_id: this process's name in logs.

    Attributes:
        swept: sessions put back in the ready zset (each one is logged).
    """

    def __init__(
        self,
        client: Client,
        scripts: LaneScripts,
        keys: LaneKeys,
        wake: asyncio.Event,
        *,
        interval_s: float,
        batch: int,
        age_s: float,
        worker_id: str,
    ) -> None:
        self._redis = client
        self._scripts = scripts
        self._keys = keys
        self._wake = wake
        self._interval_s = interval_s
        self._batch = batch
        self._age_ms = int(age_s * 1000)
        self._worker_id = worker_id
        self.swept = 0

    async def run(self) -> None:
        """Task boundary: every ``interval_s`` seconds, one bounded round (see :meth:`sweep`)."""
        cursors: dict[str, int] = {}
        failures = 0
        while True:
            await asyncio.sleep(
                self._interval_s if not failures else RECONNECT_BACKOFF.compute(failures)
            )
            try:
                cursors, _ = await self.sweep(cursors)
                failures = 0
            except Exception as exc:
                failures += 1
                cursors = {}
                if unavailable(exc):
                    logger.warning(
                        "lane.sweep_failed", extra={"worker": self._worker_id, "error": repr(exc)}
                    )
                else:
                    logger.exception("lane.sweep_failed", extra={"worker": self._worker_id})

    async def sweep(self, cursors: dict[str, int] | None = None) -> tuple[dict[str, int], int]:
        """One round: re-add lost sessions to the ready zset.

        ``SCAN`` (``COUNT batch`` per node and step) continues from ``cursors`` over the
        session hashes, step after step until ``batch`` hashes were found, the keyspace was
        scanned through or :data:`MAX_SCAN_STEPS` steps were made; ``S_STUCK`` (one script
        per session, atomic on its slot) picks those with messages that have been ready or in
        a quiet window for ``age_s`` or whose lease expired that long ago; ``G_SWEEP``
        re-adds those that no global structure (ready, delayed, slots, held) holds. A session
        re-added by mistake costs one empty claim, never a duplicate turn (``S_BEGIN``
        decides from the session's own state).

        Args:
            cursors: the ``SCAN`` cursor per node name of the previous round (``{}``: start).

        Returns:
            The cursors to continue from (``{}`` once every node was scanned through) and the
            number of sessions re-added.

        Raises:
            redis.exceptions.RedisError, OSError: when Redis cannot be reached.
        """
        hashes, nxt = await self._scan(cursors or {})
        steps = 1
        # Most keys are not session hashes (lists, enqueue marks: one per message for a day),
        # so one SCAN step of COUNT batch finds few: keep stepping until a batch of hashes is
        # found, the keyspace was scanned through, or MAX_SCAN_STEPS steps were made. A full
        # pass then takes a few rounds, not one round per ``batch`` keys.
        while nxt and len(hashes) < self._batch and steps < MAX_SCAN_STEPS:
            more, nxt = await self._scan(nxt)
            hashes += more
            steps += 1
        if not hashes:
            return nxt, 0
        results = await asyncio.gather(
            *(
                self._scripts.run("S_STUCK", LaneKeys.session_keys_of_hash(h), [self._age_ms])
                for h in hashes
            ),
            return_exceptions=True,
        )
        sessions: list[str] = []
        for hash_key, res in zip(hashes, results, strict=True):
            if isinstance(res, BaseException):
                if unavailable(res):
                    raise res
                continue  # not a lane hash (a key that only looks like one)
            if int(res[0]) != 1:
                continue
            session = self._keys.session_of_hash(hash_key, str(res[2]))
            if session is not None:
                sessions.append(session)
        if not sessions:
            return nxt, 0
        added = await self._scripts.run(
            "G_SWEEP", self._keys.global_keys, [self._keys.channel, *sessions]
        )
        for session in added:
            logger.warning(
                "lane.swept", extra={"session_key": str(session), "worker": self._worker_id}
            )
        self.swept += len(added)
        if added:
            self._wake.set()
        return nxt, len(added)

    async def _scan(self, cursors: dict[str, int]) -> tuple[list[str], dict[str, int]]:
        """One ``SCAN`` step per node from ``cursors``: the session hashes found, next cursors.

        Raises:
            redis.exceptions.RedisError, OSError: when Redis cannot be reached.
        """
        pattern = self._keys.hash_pattern
        count = self._batch
        keys: list[Any] = []
        nxt: dict[str, int] = {}
        if isinstance(self._redis, RedisCluster):
            cluster = self._redis
            # The cluster client answers SCAN with ({node name: cursor}, keys).
            got: Any
            if not cursors:
                got, keys = await cluster.scan(0, match=pattern, count=count)
                nxt = {str(k): int(v) for k, v in got.items()}
            for name, cursor in cursors.items():
                node = cluster.get_node(node_name=name)
                if node is None:
                    continue
                got, found = await cluster.scan(
                    cursor, match=pattern, count=count, target_nodes=node
                )
                keys += found
                nxt[name] = int(got[name])
        else:
            cursor, keys = await self._redis.scan(cursors.get("", 0), match=pattern, count=count)
            nxt = {"": int(cursor)}
        return [str(k) for k in keys], {k: v for k, v in nxt.items() if v != 0}
