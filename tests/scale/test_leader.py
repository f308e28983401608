"""Leader leases (bot.leader) on a real redis-server: one holder, handover, crash, outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar
from unittest.mock import MagicMock

import pytest
import pytest_asyncio

from bot.lanes.redis import connect
from bot.leader import KEY_PREFIX, LeaderLease, PullReceivers, retry_interval
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.timeout(30)

LEASE_S = 1.5


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A plain redis-server on a free loopback port."""
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


@pytest_asyncio.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A redis-py asyncio client of the server."""
    c = connect(redis_server.url)
    yield c
    await c.aclose()


class Receiver:
    """Records when it was started and stopped (a stand-in for a pull receiver)."""

    def __init__(self, name: str, log: list[tuple[str, str, float]]) -> None:
        self.name = name
        self.log = log
        self.running = False

    async def start(self) -> None:
        self.running = True
        self.log.append((self.name, "start", asyncio.get_running_loop().time()))

    async def stop(self) -> None:
        self.running = False
        self.log.append((self.name, "stop", asyncio.get_running_loop().time()))


def lease(client: Any, receiver: Receiver, name: str = "switchboard:leader:t:a") -> LeaderLease:
    return LeaderLease(
        client, name, on_acquired=receiver.start, on_lost=receiver.stop, lease_s=LEASE_S
    )


async def wait_until(predicate: Any, timeout_s: float) -> float:
    """Seconds until ``predicate()`` held (TimeoutError after ``timeout_s``)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - lease state has no event to wait on
            await asyncio.sleep(0.02)
    return loop.time() - t0


def never_both(log: list[tuple[str, str, float]]) -> None:
    """Replay the start/stop log: at no time were two receivers running."""
    running: set[str] = set()
    for name, what, _ in sorted(log, key=lambda e: e[2]):
        if what == "start":
            assert not running, f"{name} started while {running} ran"
            running.add(name)
        else:
            running.discard(name)


async def test_one_holder_and_a_graceful_handover_within_a_retry(client: Any) -> None:
    log: list[tuple[str, str, float]] = []
    a, b = Receiver("a", log), Receiver("b", log)
    la, lb = lease(client, a), lease(client, b)
    la.start()
    await wait_until(lambda: a.running, 2)
    lb.start()
    await asyncio.sleep(LEASE_S * 1.5)  # several renewals: a keeps it, b never starts
    assert a.running
    assert not b.running
    assert la.terms == 1
    await la.stop()
    assert not a.running
    took = await wait_until(lambda: b.running, 3)
    assert took <= retry_interval(LEASE_S) + 0.3  # released: no wait for the expiry
    await lb.stop()
    never_both(log)


async def test_a_crashed_holder_is_replaced_after_the_lease_timeout(client: Any) -> None:
    log: list[tuple[str, str, float]] = []
    a, b = Receiver("a", log), Receiver("b", log)
    la, lb = lease(client, a), lease(client, b)
    la.start()
    await wait_until(lambda: a.running, 2)
    lb.start()
    assert la._task is not None
    la._task.cancel()  # a killed process: no renewal, no release
    a.running = False
    took = await wait_until(lambda: b.running, LEASE_S + 2)
    assert LEASE_S / 2 <= took <= LEASE_S + retry_interval(LEASE_S) + 0.3
    await lb.stop()


async def test_a_lease_taken_over_stops_the_receiver(client: Any) -> None:
    log: list[tuple[str, str, float]] = []
    a = Receiver("a", log)
    la = lease(client, a)
    la.start()
    await wait_until(lambda: a.running, 5)
    await client.set("switchboard:leader:t:a", "someone-else", px=60_000)
    # The next renewal (every LEASE_S / 3) finds the key taken; a loaded machine may be late.
    await wait_until(lambda: not a.running, LEASE_S + 0.5)
    assert not la.is_leader
    await la.stop()
    assert await client.get("switchboard:leader:t:a") == "someone-else"  # not released


async def test_redis_down_stops_the_receiver_before_the_lease_could_expire(
    client: Any, redis_server: RedisServer
) -> None:
    log: list[tuple[str, str, float]] = []
    a = Receiver("a", log)
    la = lease(client, a)
    la.start()
    await wait_until(lambda: a.running, 2)
    started = log[-1][2]
    redis_server.stop(kill=True)
    await wait_until(lambda: not a.running, LEASE_S + 1)
    assert log[-1][2] - started < LEASE_S + 0.1  # off before another process could lead
    redis_server.restart()
    await wait_until(lambda: a.running, LEASE_S + 3)  # leads again once Redis is back
    assert la.terms == 2
    await la.stop()


class FakePull:
    """A channel-like pull receiver."""

    name: ClassVar[str] = "fake"

    def __init__(self, account: str | None) -> None:
        self.account = account
        self.calls: list[str] = []

    def receiver_account(self) -> str | None:
        return self.account

    async def start_receiving(self) -> None:
        self.calls.append("start")

    async def stop_receiving(self) -> None:
        self.calls.append("stop")


async def test_without_redis_receivers_run_directly_and_unconfigured_ones_not_at_all() -> None:
    on, off = FakePull("bot1"), FakePull(None)
    receivers = PullReceivers([on, off])  # type: ignore[list-item]
    await receivers.start()
    assert on.calls == ["start"]
    assert off.calls == []
    assert receivers.leases == {}
    await receivers.stop()
    assert on.calls == ["start", "stop"]


async def test_with_redis_each_receiver_has_its_lease(client: Any) -> None:
    one, two = FakePull("bot1"), FakePull("bot2")
    receivers = PullReceivers([one, two], client=client, lease_s=LEASE_S)  # type: ignore[list-item]
    await receivers.start()
    assert set(receivers.leases) == {f"{KEY_PREFIX}fake:bot1", f"{KEY_PREFIX}fake:bot2"}
    await wait_until(lambda: one.calls == ["start"] and two.calls == ["start"], 2)
    await receivers.stop()
    assert one.calls == two.calls == ["start", "stop"]
    assert await client.exists(f"{KEY_PREFIX}fake:bot1", f"{KEY_PREFIX}fake:bot2") == 0


class SwallowingLock:
    """A lock whose renewal consumes a cancellation and returns (as redis-py 8.2 can)."""

    def __init__(self) -> None:
        self.local = type("Local", (), {"token": None})()
        self.renewals = 0

    async def acquire(self) -> bool:
        self.local.token = b"t"
        return True

    async def reacquire(self) -> bool:
        self.renewals += 1
        if self.renewals > 1:  # one swallowed cancellation: a regression fails, never hangs
            await asyncio.sleep(3600)
        with contextlib.suppress(asyncio.CancelledError):  # swallowed: the task keeps running
            await asyncio.sleep(3600)
        return True

    async def release(self) -> None:
        self.local.token = None


async def test_a_lease_stops_even_when_a_redis_call_swallows_the_cancellation() -> None:
    log: list[tuple[str, str, float]] = []
    a = Receiver("a", log)
    # lease 3 s: a renewal every second, each given a second before it counts as lost.
    la = LeaderLease(MagicMock(), "t", on_acquired=a.start, on_lost=a.stop, lease_s=3.0)
    fake = SwallowingLock()
    la._lock = fake  # type: ignore[assignment]
    la.start()
    await wait_until(lambda: fake.renewals > 0, 5)  # the task is inside reacquire() now

    await asyncio.wait_for(la.stop(), 5)  # looped forever before

    assert not a.running
    assert not la.is_leader
