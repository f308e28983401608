"""Redis-backend specifics the contract suite cannot see: several workers on one Redis, a dead
worker's lease and fencing token, keys of idle lanes, Redis outages and restarts with AOF, and
the number of round trips per message."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.config import QueueMode
from bot.errors import BackendUnavailable
from bot.lanes.base import LaneConfig
from bot.lanes.redis import RedisLaneQueue, connect
from tests.fakes.redis_server import RedisServer
from tests.lanes.harness import Recorder, ids, key, msg

FOLLOWUP = QueueMode.FOLLOWUP
INTERRUPT = QueueMode.INTERRUPT


@pytest.fixture
async def make(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisLaneQueue]]:
    """Builds queues ("workers") sharing one fresh prefix on the session's redis-server."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    made: list[RedisLaneQueue] = []

    def build(config: LaneConfig | None = None, url: str = "", **kw: object) -> RedisLaneQueue:
        queue = RedisLaneQueue(
            config or LaneConfig(),
            url or redis_server.url,
            prefix=prefix,
            **kw,  # type: ignore[arg-type]
        )
        made.append(queue)
        return queue

    yield build
    for queue in made:
        await queue.close()


async def _keys(queue: RedisLaneQueue, server: RedisServer, prefix: str) -> list[str]:
    client = connect(server.url)
    try:
        return sorted([str(k) async for k in client.scan_iter(match=f"*{prefix}*")])
    finally:
        await client.aclose()


async def test_two_workers_share_the_cap_and_keep_each_session_in_order(
    make: Callable[..., RedisLaneQueue],
) -> None:
    rec = Recorder(rng=random.Random(7), jitter=30)
    config = LaneConfig(max_concurrent_turns=3, debounce_ms=5)
    a, b = make(config, worker_id="a"), make(config, worker_id="b")
    await a.start(rec.handle, rec.on_overflow)
    await b.start(rec.handle, rec.on_overflow)
    sent: dict[str, list[str]] = {}
    for n in range(6):
        for i in range(15):
            m = msg(f"s{i}", n)
            sent.setdefault(f"s{i}", []).append(m.event_id)
            await (a if (n + i) % 2 else b).enqueue(m, FOLLOWUP)

    await rec.wait_for(lambda: len(rec.finished) == 90, within_s=20)
    for s, expected in sent.items():
        assert [m.event_id for t in rec.turns_of(s) for m in t.messages] == expected
    assert rec.max_per_session == 1  # never the same session in two workers at once
    assert rec.max_running <= 3  # the cap holds across both processes


async def test_the_cap_is_global_across_workers(make: Callable[..., RedisLaneQueue]) -> None:
    rec = Recorder(hold_all=True)
    config = LaneConfig(max_concurrent_turns=2)
    a, b = make(config), make(config)
    await a.start(rec.handle, rec.on_overflow)
    await b.start(rec.handle, rec.on_overflow)
    for i in range(6):
        await (a, b)[i % 2].enqueue(msg(f"s{i}", 1), FOLLOWUP)
    await rec.until_started(2)
    await asyncio.sleep(0.3)
    assert len(rec.started) == 2
    for turn in list(rec.started):
        rec.release(turn.messages[0].sender.id)
    await rec.wait_for(lambda: len(rec.started) == 4)
    await asyncio.sleep(0.2)
    assert len(rec.started) == 4  # two freed slots, two new turns, whichever worker
    rec.hold_all = False
    for turn in rec.started[2:]:
        rec.release(turn.messages[0].sender.id)
    await rec.wait_for(lambda: len(rec.finished) == 6)
    assert rec.max_running == 2


async def test_dead_worker_loses_its_lease_and_another_resumes_the_turn(
    make: Callable[..., RedisLaneQueue],
) -> None:
    held = Recorder(hold_all=True)
    a = make(LaneConfig(), worker_id="a", lease_s=0.6, poll_s=0.1)
    await a.start(held.handle, held.on_overflow)
    await a.enqueue(msg("x", 1), FOLLOWUP)
    await a.enqueue(msg("x", 2), FOLLOWUP)
    await held.until_started(1)
    old_token = a._running[key("x")].token

    await a._die()  # like SIGKILL: no ack, no heartbeat, no release
    rec = Recorder()
    b = make(LaneConfig(), worker_id="b", lease_s=0.6, poll_s=0.1)
    await b.start(rec.handle, rec.on_overflow)

    await rec.wait_for(lambda: len(rec.finished) == 2, within_s=5)
    # The unfinished turn was resumed with the same message, then the next one ran.
    assert [ids(t.messages) for t in rec.finished] == [["x-1"], ["x-2"]]
    # Fencing: the dead worker's late ack is refused.
    assert not await b._try_ack(key("x"), old_token)


async def test_interrupt_from_another_process_cancels_the_running_turn(
    make: Callable[..., RedisLaneQueue],
) -> None:
    rec = Recorder(hold={key("x")})
    worker = make(LaneConfig(debounce_ms=10_000))
    ingress = make(LaneConfig(debounce_ms=10_000))  # never started: enqueues only
    await worker.start(rec.handle, rec.on_overflow)
    await ingress.enqueue(msg("x", 1), FOLLOWUP)
    await rec.until_started(1)
    rec.hold.clear()

    await ingress.enqueue(msg("x", 2), INTERRUPT)

    await rec.wait_for(lambda: len(rec.finished) == 1, within_s=3)
    assert [ids(t.messages) for t in rec.cancelled] == [["x-1"]]
    assert ids(rec.finished[0].all_messages) == ["x-1", "x-2"]
    assert rec.finished[0].interrupted


async def test_idle_lanes_leave_no_keys(
    make: Callable[..., RedisLaneQueue], redis_server: RedisServer
) -> None:
    rec = Recorder()
    queue = make(LaneConfig(lane_idle_s=0.2, debounce_ms=5))
    await queue.start(rec.handle, rec.on_overflow)
    prefix = queue.global_keys[0].split("}")[0][1:]
    for i in range(50):
        await queue.enqueue(msg(f"s{i}", 1), QueueMode.COLLECT)
        await queue.enqueue(msg(f"s{i}", 2), QueueMode.COLLECT)
    await rec.wait_for(lambda: sum(len(t.messages) for t in rec.finished) == 100)
    assert any(k.endswith(":h") for k in await _keys(queue, redis_server, prefix))

    async with asyncio.timeout(5):
        while (keys := await _keys(queue, redis_server, prefix)) != [f"{{{prefix}}}:stats"]:  # noqa: ASYNC110 - Redis key expiry has no event
            await asyncio.sleep(0.05)
    assert keys == [f"{{{prefix}}}:stats"]  # only the global counters remain
    assert queue.stats().lanes == 0


async def test_redis_down_refuses_messages_and_workers_recover(
    make: Callable[..., RedisLaneQueue], tmp_path: Path
) -> None:
    server = RedisServer.start(tmp_path / "r")
    try:
        rec = Recorder()
        queue = make(LaneConfig(), url=server.url, poll_s=0.2)
        await queue.start(rec.handle, rec.on_overflow)
        await queue.enqueue(msg("a", 1), FOLLOWUP)
        await rec.until_finished(1)

        server.stop()
        with pytest.raises(BackendUnavailable):
            await asyncio.wait_for(queue.enqueue(msg("a", 2), FOLLOWUP), timeout=10)

        server.restart()
        await queue.enqueue(msg("a", 3), FOLLOWUP)
        await rec.wait_for(lambda: len(rec.finished) == 2, within_s=10)
        assert ids(rec.finished[1].messages) == ["a-3"]
    finally:
        server.stop()


async def test_restart_with_aof_loses_nothing_accepted(
    make: Callable[..., RedisLaneQueue], tmp_path: Path
) -> None:
    server = RedisServer.start(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always")
    try:
        ingress = make(LaneConfig(), url=server.url)
        sent = {f"s{i}": [f"s{i}-{n}" for n in range(10)] for i in range(5)}
        for n in range(10):
            for i in range(5):
                await ingress.enqueue(msg(f"s{i}", n), FOLLOWUP)

        server.stop(kill=True)  # SIGKILL: only what AOF fsynced survives
        server.restart()

        rec = Recorder()
        worker = make(LaneConfig(), url=server.url)
        await worker.start(rec.handle, rec.on_overflow)
        await rec.wait_for(lambda: len(rec.finished) == 50, within_s=10)
        for s, expected in sent.items():
            assert [m.event_id for t in rec.turns_of(s) for m in t.messages] == expected
    finally:
        server.stop()


async def test_round_trips_per_message(
    make: Callable[..., RedisLaneQueue], capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Recorder()
    queue = make(LaneConfig(max_concurrent_turns=8))
    await queue.start(rec.handle, rec.on_overflow)
    await queue.enqueue(msg("warm", 0), FOLLOWUP)
    await rec.until_finished(1)
    client = queue.client

    async def calls() -> int:
        # Every lane operation is one script call (commands inside scripts are not trips).
        stats = await client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    before = await calls()
    n = 400
    for i in range(n):
        await queue.enqueue(msg(f"s{i % 40}", i), FOLLOWUP)
    await rec.wait_for(lambda: len(rec.finished) == n + 1, within_s=20)
    await asyncio.sleep(0.05)  # the last release
    per_message = (await calls() - before) / n

    with capsys.disabled():
        print(f"\nredis lanes: {per_message:.2f} round trips per message (followup)")
    assert per_message <= 8
