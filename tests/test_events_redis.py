"""The cross-process event feed on a real ``redis-server``: delivery between two buses, and the
shared pub/sub subscription (``bot.redis_pubsub``) surviving a Redis restart."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from unittest.mock import MagicMock

import pytest

from bot.envelope import SessionKey
from bot.events import HubEvent
from bot.events_redis import RedisEventBus
from bot.redis_pubsub import Subscription
from tests.fakes.redis_server import RedisServer

KEY = SessionKey("rest:default:c1")


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


async def until(predicate: Callable[[], bool], within_s: float = 15.0) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - connection state has no event
            await asyncio.sleep(0.02)


async def test_events_cross_processes_and_survive_a_redis_restart(redis: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    ingress = RedisEventBus(redis.url, prefix=prefix)  # listens (serves viewers)
    worker = RedisEventBus(redis.url, prefix=prefix, listen=False)
    await ingress.start()
    await worker.start()
    try:
        async with ingress.subscribe(KEY) as sub:
            worker.publish(HubEvent("message", KEY, 1, {"role": "bot"}))
            got = await sub.get(5)
            assert got is not None
            assert (got.type, got.seq) == ("message", 1)

            async with ingress.subscribe() as health:
                redis.stop()
                down = await health.get(10)
                assert down is not None
                assert (down.type, down.data["redis"]) == ("backend", "down")
                assert not ingress.connected

                redis.restart()
                up = await health.get(15)
                assert up is not None
                assert (up.type, up.data["redis"]) == ("backend", "up")

            worker.publish(HubEvent("message", KEY, 2, {"role": "bot"}))
            got = await sub.get(10)
            assert got is not None
            assert got.seq == 2  # the listener subscribed again
    finally:
        await worker.close()
        await ingress.close()


async def test_subscription_reports_its_state_and_keeps_delivering(redis: RedisServer) -> None:
    from bot.lanes.redis import connect

    client = connect(redis.url)
    publisher = connect(redis.url)
    received: list[str] = []
    states: list[bool] = []
    sub = Subscription(client, received.append, channels=["ch"], on_state=states.append)
    task = asyncio.create_task(sub.run())
    try:
        await until(lambda: sub.connected)
        await publisher.publish("ch", "one")
        await until(lambda: received == ["one"])

        redis.stop()
        await until(lambda: not sub.connected)
        redis.restart()
        await until(lambda: sub.connected)
        await publisher.publish("ch", "two")
        await until(lambda: received == ["one", "two"])
        assert states[0] is True
        assert False in states
        assert states[-1] is True
        assert sub.failures == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        await publisher.aclose()


def test_subscription_needs_a_channel_or_pattern() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Subscription(object(), print)


class SwallowingPubSub:
    """A pub/sub whose read consumes a cancellation and returns nothing (as redis-py 8.2 can)."""

    def __init__(self) -> None:
        self.reads = 0
        self.reading = asyncio.Event()

    async def subscribe(self, *channels: str) -> None:
        return None

    async def get_message(self, **options: float) -> dict[str, object] | None:
        self.reads += 1
        if self.reads == 1:
            return {"type": "subscribe", "channel": "c", "data": 1}
        if self.reading.is_set():  # one swallowed cancellation: a regression fails, never hangs
            await asyncio.sleep(options["timeout"])
            return None
        self.reading.set()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed: the task keeps running
            await asyncio.sleep(options["timeout"])
        return None

    async def aclose(self) -> None:
        return None


async def test_a_subscription_stops_even_when_a_read_swallows_the_cancellation() -> None:
    pubsub = SwallowingPubSub()
    client = MagicMock()
    client.pubsub.return_value = pubsub
    states: list[bool] = []
    subscription = Subscription(
        client, lambda _: None, channels=["c"], on_state=states.append, idle_s=0.5
    )
    task = asyncio.create_task(subscription.run())
    await asyncio.wait_for(pubsub.reading.wait(), 5)  # subscribed, now inside a read
    assert states == [True]

    task.cancel()

    done, _ = await asyncio.wait({task}, timeout=5)  # read on forever before
    assert done == {task}
    assert task.cancelled()
