"""Redis specifics of the purge the contract cannot see: every key of the prefix afterwards, the
global structures and counters, keys under the session's tag (``final``), a dead worker's turn,
and a separate process (``LanePurger.connect``, as ``switchboard customer erase`` uses it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bot.lanes.base import LaneConfig
from bot.lanes.redis import RedisLaneQueue, connect
from bot.lanes.redis.purge import LanePurger
from tests.fakes.redis_server import RedisServer
from tests.lanes.harness import Recorder, ids, key
from tests.lanes.test_purge import ADDRESS, ALICE, COLLECT, said


async def dump(server: RedisServer, prefix: str) -> dict[str, str]:
    """Every key of the prefix with its whole value as text (strings, lists, hashes, sets)."""
    client = connect(server.url)
    out: dict[str, str] = {}
    try:
        async for raw in client.scan_iter(match=f"*{prefix}*"):
            k = str(raw)
            kind = await client.type(k)
            if kind == "string":
                value: Any = await client.get(k)
            elif kind == "list":
                value = await client.lrange(k, 0, -1)
            elif kind == "hash":
                value = await client.hgetall(k)
            elif kind == "zset":
                value = await client.zrange(k, 0, -1, withscores=True)
            else:
                value = await client.smembers(k)
            out[k] = repr(value)
    finally:
        await client.aclose()
    return out


def holding(keys: dict[str, str], *values: str) -> list[str]:
    return sorted(k for k, v in keys.items() if any(x in k or x in v for x in values))


async def test_nothing_of_her_is_left_in_any_key_and_the_counters_follow(
    make: Callable[..., RedisLaneQueue], redis_server: RedisServer, prefix: str
) -> None:
    ingress = make(LaneConfig(debounce_ms=0))  # never started: lanes wait in Redis
    for m in (
        said("alice", "alice", 1, "card 4242"),
        said("bob", "bob", 1),
        said("grp", "alice", 1, "me too"),
        said("grp", "bob", 2, f"mail {ADDRESS}"),
    ):
        await ingress.enqueue(m, COLLECT)
    await ingress._global.flush(2.0)  # the pushes reached the ready zset
    marks = ingress.session_keys(key("alice"))[0].removesuffix(":q")
    client = connect(redis_server.url)
    await client.set(f"{marks}:m:test:acct:alice-1", "1")  # as EnqueueMarks writes them
    before = await dump(redis_server, prefix)
    assert holding(before, "alice", "4242")

    purger = LanePurger.connect(redis_server.url, prefix=prefix)  # another process
    try:
        purged = await purger.purge(ALICE)
        assert (purged.removed, purged.scrubbed, purged.lanes_dropped) == (2, 1, 1)
        left = holding(await dump(redis_server, prefix), "alice")
        assert left == [f"{marks}:m:test:acct:alice-1"]  # the mark goes only with final
        assert (await purger.purge(ALICE, final=True)).keys_deleted == 1
    finally:
        await purger.close()
    after = await dump(redis_server, prefix)
    assert holding(after, "alice", "4242") == []
    stats = await client.hgetall("{" + prefix + "}:stats")
    assert (stats["queued"], stats["lanes"]) == ("2", "2")  # bob's lane and the group's
    assert await client.zrange("{" + prefix + "}:ready", 0, -1) == sorted([key("bob"), key("grp")])
    await client.aclose()

    rec = Recorder()
    worker = make(LaneConfig(debounce_ms=0))
    await worker.start(rec.handle, rec.on_overflow)
    await rec.until_finished(2)
    assert sorted(ids(t.messages) for t in rec.finished) == [["bob-1"], ["bob-2"]]
    assert "[erased]" in rec.turns_of("grp")[0].messages[0].text


async def test_her_message_in_a_dead_workers_turn_is_purged_and_the_rest_resumed(
    make: Callable[..., RedisLaneQueue],
) -> None:
    held = Recorder(hold_all=True)
    a = make(LaneConfig(debounce_ms=0), worker_id="a", lease_s=0.6, poll_s=0.1)
    await a.enqueue(said("grp", "alice", 1), COLLECT)
    await a.enqueue(said("grp", "bob", 2), COLLECT)
    await a.start(held.handle, held.on_overflow)
    await held.until_started(1)
    assert ids(held.started[0].messages) == ["alice-1", "bob-2"]  # one turn holds both
    assert (await a.purge(ALICE)).in_flight == 1  # its lease is alive: left alone

    await a._die()  # like SIGKILL: no ack, no release
    await asyncio.sleep(0.8)  # the lease expires: nobody runs the turn any more
    b = make(LaneConfig(debounce_ms=0), worker_id="b", lease_s=0.6, poll_s=0.1)
    purged = await b.purge(ALICE)
    assert (purged.removed, purged.in_flight) == (1, 0)

    rec = Recorder()
    await b.start(rec.handle, rec.on_overflow)
    await rec.until_finished(1)
    assert ids(rec.finished[0].all_messages) == ["bob-2"]  # resumed without hers
    await asyncio.sleep(0.2)
    assert len(rec.started) == 1
