"""The ``lane_factory`` fixture: every contract test runs once per lane backend.

Adding a backend (hook for the Redis backend of a later issue):

1. append ``pytest.param("redis", id="redis")`` to ``BACKENDS`` (the fixture starts a real
   ``redis-server`` on a free loopback port; never skip when the server is missing);
2. add a branch to :func:`build_queue`, e.g.
   ``return RedisLaneQueue(config, url)`` with a fresh key prefix or database per test so tests
   do not see each other's lanes.

The tests themselves never name a backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.lanes.base import LaneConfig, LaneFactory, LaneQueue
from bot.lanes.memory import MemoryLaneQueue

BACKENDS = [
    pytest.param("memory", id="memory"),
    # pytest.param("redis", id="redis", marks=pytest.mark.skipif(...)),  # see module docstring
]


def build_queue(backend: str, config: LaneConfig) -> LaneQueue:
    """A new, unstarted lane queue of ``backend``."""
    if backend == "memory":
        return MemoryLaneQueue(config)
    # if backend == "redis":
    #     from bot.lanes.redis import RedisLaneQueue
    #     return RedisLaneQueue(config, url)
    raise ValueError(f"unknown lane backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def lane_factory(request: pytest.FixtureRequest) -> AsyncIterator[LaneFactory]:
    """Builds lane queues of the parametrized backend; closes them after the test."""
    backend: str = request.param
    made: list[LaneQueue] = []

    def make(config: LaneConfig) -> LaneQueue:
        queue = build_queue(backend, config)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.close()
