"""Redis lanes under the failures that lost sessions before: a push racing the release of the
same session in another process, a failed global step, a session lost between the session
script and the global step (the sweeper), and hundreds of concurrent producers on a cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.config import QueueMode
from bot.envelope import InboundMessage, Participant, session_key
from bot.errors import BackendUnavailable
from bot.lanes.base import LaneConfig
from bot.lanes.redis import RedisLaneQueue
from tests.fakes.redis_server import RedisClusterProcs
from tests.lanes.conftest import flush
from tests.lanes.harness import ACCOUNT, CHANNEL, Recorder, eventually, ids, key, msg

FOLLOWUP = QueueMode.FOLLOWUP

StepFn = Callable[..., Any]


def ops_of(args: list[Any]) -> list[tuple[str, str]]:
    """The ``(op, session)`` pairs of ``G_STEP`` arguments."""
    tail = args[7:]
    return [(str(tail[i]), str(tail[i + 1])) for i in range(0, len(tail), 3)]


def wrap_step(queue: RedisLaneQueue, before: Callable[[list[Any]], Any]) -> list[list[Any]]:
    """Route ``queue``'s ``G_STEP`` calls through ``await before(args)``; returns the calls."""
    real: StepFn = queue._scripts["G_STEP"]
    calls: list[list[Any]] = []

    async def step(keys: list[str], args: list[Any]) -> Any:
        await before(args)
        res = await real(keys=keys, args=args)
        calls.append(args)
        return res

    queue._scripts["G_STEP"] = step  # type: ignore[assignment]
    return calls


async def test_a_push_racing_the_release_of_the_same_session_elsewhere_is_not_lost(
    make: Callable[..., RedisLaneQueue],
) -> None:
    """Worker a ends x's turn (lane idle, its release still on the way); worker b takes x's
    next message and pushes x while a still holds x's slot. The message must be handled."""
    rec = Recorder()
    a, b = make(worker_id="a"), make(worker_id="b")
    x = key("x")
    release_held = asyncio.Event()
    a_releasing = asyncio.Event()

    async def hold_release(args: list[Any]) -> None:
        if ("n", x) in ops_of(args) and not release_held.is_set():
            a_releasing.set()
            await release_held.wait()

    async def nothing(args: list[Any]) -> None:
        return None

    wrap_step(a, hold_release)
    b_calls = wrap_step(b, nothing)
    await a.start(rec.handle, rec.on_overflow)
    await b.start(rec.handle, rec.on_overflow)

    await a.enqueue(msg("x", 1), FOLLOWUP)
    await asyncio.wait_for(a_releasing.wait(), 5)  # turn 1 done, its release held back
    await b.enqueue(msg("x", 2), FOLLOWUP)
    await eventually(lambda: any(("p", x) in ops_of(c) for c in b_calls))
    release_held.set()

    await rec.wait_for(lambda: len(rec.finished) == 2, within_s=5)
    assert [ids(t.messages) for t in rec.finished] == [["x-1"], ["x-2"]]


async def test_a_push_while_the_slot_is_held_does_not_spin_the_workers(
    make: Callable[..., RedisLaneQueue],
) -> None:
    """While a long turn runs, a push of its session waits for the slot's release instead of
    sitting in the ready zset, where every claim would pop it, put it back and wake every
    worker again (a storm of global steps for as long as the turn runs)."""
    rec = Recorder(hold={key("x")})
    a, b = make(worker_id="a"), make(worker_id="b")
    count = 0

    async def counting(args: list[Any]) -> None:
        nonlocal count
        count += 1

    wrap_step(a, counting)
    wrap_step(b, counting)
    await a.start(rec.handle, rec.on_overflow)
    await b.start(rec.handle, rec.on_overflow)
    await a.enqueue(msg("x", 1), FOLLOWUP)
    await rec.until_started(1)
    owner = a if key("x") in a._running else b

    (b if owner is a else a)._post("p", key("x"))  # x became ready elsewhere, slot still held
    await asyncio.sleep(0.1)
    count = 0
    await asyncio.sleep(0.5)
    assert count < 10  # idle polls only (poll_s 1 s), no wake-up ping-pong

    await b.enqueue(msg("x", 2), FOLLOWUP)
    rec.hold.clear()
    rec.release("x")
    await rec.wait_for(lambda: len(rec.finished) == 2, within_s=5)
    assert [ids(t.messages) for t in rec.finished] == [["x-1"], ["x-2"]]


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RedisConnectionError("connection reset"), id="connection-error"),
        pytest.param(AttributeError("'NoneType' object has no attribute 'writelines'"), id="bug"),
    ],
)
async def test_a_failed_global_step_keeps_its_operations(
    make: Callable[..., RedisLaneQueue], error: Exception
) -> None:
    rec = Recorder()
    worker = make()
    failed = False

    async def fail_once(args: list[Any]) -> None:
        nonlocal failed
        if ("p", key("x")) in ops_of(args) and not failed:
            failed = True
            raise error

    wrap_step(worker, fail_once)
    await worker.start(rec.handle, rec.on_overflow)
    await worker.enqueue(msg("x", 1), FOLLOWUP)

    await rec.wait_for(lambda: len(rec.finished) == 1, within_s=5)
    assert failed
    assert ids(rec.finished[0].messages) == ["x-1"]


def braced(n: int) -> InboundMessage:
    """A message of a session whose key holds braces (its keys use a digest hash tag)."""
    return InboundMessage(
        event_id=f"b-{n}",
        channel=CHANNEL,
        account=ACCOUNT,
        session_key=session_key(CHANNEL, ACCOUNT, dm_peer="{odd}"),
        sender=Participant(id="odd"),
        text=f"braced {n}",
    )


async def test_the_sweeper_puts_back_sessions_lost_between_the_two_scripts(
    make: Callable[..., RedisLaneQueue],
) -> None:
    """The state a crash between ``S_ENQUEUE`` and ``G_STEP`` leaves, made by hand: sessions
    marked ready in their hash but in no global structure."""
    ingress = make()  # enqueues only
    await ingress.enqueue(msg("x", 1), FOLLOWUP)
    await ingress.enqueue(braced(1), FOLLOWUP)
    client = ingress.client
    ready = ingress.global_keys[0]
    async with asyncio.timeout(5):
        while await client.zcard(ready) < 2:  # noqa: ASYNC110 - the global step has no event
            await asyncio.sleep(0.01)
    await client.delete(ready)  # as if the batched global write never happened
    x_hash = ingress.session_keys(key("x"))[1]
    assert await client.hget(x_hash, "st") == "R"

    rec = Recorder()
    worker = make(sweep_s=0.1, sweep_age_s=0.0, poll_s=0.2)
    await worker.start(rec.handle, rec.on_overflow)

    await rec.wait_for(lambda: len(rec.finished) == 2, within_s=5)
    assert sorted(m.event_id for t in rec.finished for m in t.messages) == ["b-1", "x-1"]
    assert worker.swept == 2


async def test_the_sweeper_leaves_healthy_sessions_alone(
    make: Callable[..., RedisLaneQueue],
) -> None:
    rec = Recorder(hold={key("x")})
    worker = make(sweep_s=0.05, sweep_age_s=0.0, lease_s=5.0)
    await worker.start(rec.handle, rec.on_overflow)
    await worker.enqueue(msg("x", 1), FOLLOWUP)
    await worker.enqueue(msg("x", 2), FOLLOWUP)  # waits behind the running turn
    await rec.until_started(1)
    await asyncio.sleep(0.4)  # several sweeps while x runs and has a message waiting
    assert worker.swept == 0
    rec.hold.clear()
    rec.release("x")
    await rec.wait_for(lambda: len(rec.finished) == 2)
    assert [ids(t.messages) for t in rec.finished] == [["x-1"], ["x-2"]]


async def test_cluster_takes_hundreds_of_concurrent_producers_from_a_cold_start(
    redis_cluster: RedisClusterProcs,
) -> None:
    """300 producers start at once on a fresh cluster client: redis-py 8.1 used to route the
    first commands before it knew the slot map, get MOVED, reset itself and close
    connections other tasks were writing to (``'NoneType' object has no attribute
    'writelines'``), or raise ``MaxConnectionsError`` past 100 connections per node."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    config = LaneConfig(max_concurrent_turns=16)
    ingress = RedisLaneQueue(config, redis_cluster.url, prefix=prefix)
    worker = RedisLaneQueue(config, redis_cluster.url, prefix=prefix)
    rec = Recorder()
    errors: list[BaseException] = []

    async def produce(i: int) -> None:
        for n in range(3):
            try:
                await ingress.enqueue(msg(f"s{i}", n), FOLLOWUP)
            except Exception as exc:
                errors.append(exc)

    try:
        await asyncio.gather(*(produce(i) for i in range(300)))
        assert errors == []
        await worker.start(rec.handle, rec.on_overflow)
        await rec.wait_for(lambda: len(rec.finished) == 900, within_s=30)
        for i in (0, 150, 299):
            assert [m.event_id for t in rec.turns_of(f"s{i}") for m in t.messages] == [
                f"s{i}-0",
                f"s{i}-1",
                f"s{i}-2",
            ]
    finally:
        await worker.close()
        await ingress.close()
        flush(redis_cluster.nodes)


def lose_enqueue_replies(queue: RedisLaneQueue, *, runs: int, then_raise: bool) -> None:
    """Make ``queue``'s ``S_ENQUEUE`` run ``runs`` times per call (the earlier replies lost, as
    when redis-py retries a command whose reply a dropped connection swallowed), then either
    answer with the last reply or raise a connection error (the last reply lost too)."""
    real = queue._lua.batched

    async def batched(name: str, keys: Any, args: Any) -> Any:
        if name != "S_ENQUEUE":
            return await real(name, keys, args)
        for _ in range(runs - 1):
            await real(name, keys, args)
        res = await real(name, keys, args)
        if then_raise:
            raise RedisConnectionError("Connection closed by server.")
        return res

    queue._lua.batched = batched  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("runs", "then_raise"),
    [
        pytest.param(1, True, id="reply-lost"),
        pytest.param(2, False, id="retried-after-reply-lost"),
    ],
)
async def test_an_enqueue_whose_reply_was_lost_is_scheduled_without_the_sweeper(
    make: Callable[..., RedisLaneQueue], runs: int, then_raise: bool
) -> None:
    """Redis ran ``S_ENQUEUE`` (the lane holds the message, its session is ready) but the
    reply never came: the caller saw an error, or redis-py's retry ran the script again. The
    session must still reach the ready zset at once, not after a sweeper's pass over the
    whole keyspace (minutes on a large one)."""
    rec = Recorder()
    ingress = make(worker_id="ingress")
    lose_enqueue_replies(ingress, runs=runs, then_raise=then_raise)
    worker = make(worker_id="worker", sweep_s=3600.0)
    await worker.start(rec.handle, rec.on_overflow)
    if then_raise:
        with pytest.raises(BackendUnavailable):
            await ingress.enqueue(msg("x", 1), FOLLOWUP)
    else:
        await ingress.enqueue(msg("x", 1), FOLLOWUP)

    await rec.wait_for(lambda: len(rec.finished) == runs, within_s=5)
    assert [ids(t.messages) for t in rec.finished] == [["x-1"]] * runs
    assert worker.swept == 0


async def test_the_sweeper_finds_a_lost_session_among_many_other_keys(
    make: Callable[..., RedisLaneQueue], prefix: str
) -> None:
    """Enqueue marks (one per message for a day) outnumber the session hashes many times: a
    sweeper round keeps scanning until it has a batch of hashes, so a lost session is found
    within a few rounds, not after one round per ``batch`` keys of the whole keyspace."""
    ingress = make()
    await ingress.enqueue(msg("x", 1), FOLLOWUP)
    client = ingress.client
    ready = ingress.global_keys[0]
    async with asyncio.timeout(5):
        while await client.zcard(ready) < 1:  # noqa: ASYNC110 - the global step has no event
            await asyncio.sleep(0.01)
    await client.delete(ready)  # lost between the two scripts
    filler = [f"{prefix}:filler:{i}" for i in range(40_000)]
    await client.mset(dict.fromkeys(filler, "1"))
    try:
        rec = Recorder()
        worker = make(sweep_s=0.1, sweep_age_s=0.0, sweep_batch=50, poll_s=0.2)
        await worker.start(rec.handle, rec.on_overflow)
        # One SCAN step of 50 keys per round would need 800 rounds (80 s) for a pass.
        await rec.wait_for(lambda: len(rec.finished) == 1, within_s=5)
        assert worker.swept == 1
    finally:
        for start in range(0, len(filler), 5000):
            await client.delete(*filler[start : start + 5000])
