"""Calling the lane scripts: by name (:class:`LaneScripts`), pipelined (:class:`ScriptBatcher`).

:class:`LaneScripts` registers the scripts of :mod:`bot.lanes.redis.scripts` on the client;
per-session scripts made concurrently to one Redis server go out as one pipeline per
event-loop turn.

Under load a process runs hundreds of lane scripts at once: enqueues of concurrent webhooks,
begins of a claim batch, acks of turns that end together. One command each costs a pooled
connection checkout, a write and a read in redis-py, which made the Redis client the largest
share of a worker's CPU in ``switchboard bench --backend redis``. :class:`ScriptBatcher` queues
the calls made during one pass of the event loop and sends them as one non-transactional
pipeline of ``EVALSHA`` commands (one connection, one write, one read): each call still runs
as its own atomic script, in the order the calls were made, and gets its own reply or error.

Only for a single server: a cluster client routes each script by its keys' slot itself.

Scripts unknown to the server (``NOSCRIPT``, after a restart or ``SCRIPT FLUSH``) did not run;
those calls are made again one by one through redis-py's ``AsyncScript``, which loads the
script first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from bot.lanes.redis.client import Client
from bot.lanes.redis.scripts import SOURCES

MAX_BATCH: Final = 512
"""Most script calls in one pipeline; more wait for the next one."""


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[str | int]
    fut: asyncio.Future[Any]


class ScriptBatcher:
    """Runs script calls made in the same event-loop pass as one pipeline.

    Args:
        client: a single-server asyncio client (its retry policy applies to each pipeline).

    ``await batcher(script, keys, args)`` returns what ``await script(keys=keys, args=args)``
    would, and raises what it would: a connection error fails every call of that pipeline
    (any of them may have run, as a lost reply to a single command may have), a script
    error only its own call.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._pending: list[_Call] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int]
    ) -> Any:
        """Queue one call and wait for its reply."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(script, keys, args, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        """Send what queued during this loop pass (at most ``MAX_BATCH`` per pipeline)."""
        self._scheduled = False
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            task = asyncio.get_running_loop().create_task(
                self._send(pending[start : start + MAX_BATCH]), name="lane.redis.batch"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, calls: list[_Call]) -> None:
        """Task boundary: every call's future gets a result or an exception."""
        if len(calls) == 1:
            await self._one(calls[0])
            return
        pipe = self._client.pipeline(transaction=False)
        for c in calls:
            pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # connection lost, cancelled: nobody may wait forever
            for c in calls:
                if not c.fut.done():
                    c.fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for c, reply in zip(calls, replies, strict=True):
            if isinstance(reply, NoScriptError):
                await self._one(c)
            elif c.fut.done():
                continue  # the caller was cancelled
            elif isinstance(reply, Exception):
                c.fut.set_exception(reply)
            else:
                c.fut.set_result(reply)

    @staticmethod
    async def _one(c: _Call) -> None:
        try:
            reply = await c.script(keys=list(c.keys), args=list(c.args))
        except BaseException as exc:
            if not c.fut.done():
                c.fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not c.fut.done():
            c.fut.set_result(reply)


class LaneScripts:
    """The lane scripts registered on one client, called by name.

    Args:
        client: the lanes' client (see :func:`bot.lanes.redis.client.connect`).

    Attributes:
        by_name: name (a key of :data:`SOURCES`) -> redis-py ``AsyncScript``; looked up at
            every call, so a test may wrap one.
    """

    def __init__(self, client: Client) -> None:
        self.by_name: dict[str, AsyncScript] = {
            name: client.register_script(source) for name, source in SOURCES.items()
        }
        # Enqueues, begins and acks made together go out as one pipeline (single server only:
        # a cluster client routes each script by its keys' slot itself).
        self._batch = ScriptBatcher(client) if isinstance(client, aioredis.Redis) else None

    async def run(self, name: str, keys: Sequence[str], args: Sequence[str | int] = ()) -> Any:
        """Run one script now (``EVALSHA``, loading it first when the server lacks it).

        Raises:
            redis.exceptions.RedisError, OSError: as redis-py's ``AsyncScript`` does.
        """
        return await self.by_name[name](keys=keys, args=args)

    async def batched(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run a per-session script; batched with concurrent ones on a single server.

        Raises:
            redis.exceptions.RedisError, OSError: as :class:`ScriptBatcher` does.
        """
        script = self.by_name[name]
        if self._batch is not None:
            return await self._batch(script, keys, args)
        return await script(keys=keys, args=args)
