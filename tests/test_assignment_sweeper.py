"""The assignment sweeper runs in one process at a time under a Redis lease (real redis-server)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.assignment_sweeper import LEASE_NAME, AssignmentSweeper
from bot.lanes.redis import connect
from tests.console.desk import open_desk
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


async def test_one_sweeper_at_a_time_and_a_handover(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    client = connect(redis_server.url)
    swept: list[str] = []
    changed = asyncio.Event()

    async def until(done: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not done():
                changed.clear()
                await changed.wait()

    async with open_desk(tmp_path) as desk:
        sweepers: dict[str, AssignmentSweeper] = {}
        for name in ("a", "b"):
            sweeper = AssignmentSweeper(
                desk.handoff.assignment, interval_s=0.05, lease_client=client, lease_s=1.5
            )

            async def sweep(name: str = name) -> dict[str, int]:
                swept.append(name)
                changed.set()
                return {}

            sweeper.sweep = sweep  # type: ignore[method-assign]
            sweepers[name] = sweeper
            await sweeper.start()
        try:
            await until(lambda: len(swept) >= 10)
            [leader] = set(swept)  # only the lease holder sweeps
            other = "b" if leader == "a" else "a"
            assert await client.get(LEASE_NAME) is not None
            await sweepers[leader].stop()  # a graceful stop releases the lease
            await until(lambda: other in swept)
            count = len(swept)
            await asyncio.sleep(0.3)
            assert set(swept[count:]) == {other}
        finally:
            for sweeper in sweepers.values():
                await sweeper.stop()
            await client.aclose()
