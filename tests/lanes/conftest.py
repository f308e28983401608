"""The ``lane_factory`` fixture: every contract test runs once per lane backend.

Backends: ``memory``; ``redis`` on a real ``redis-server`` and ``redis-cluster`` on a real
3-master Redis Cluster, both started once per test session on free loopback ports (Debian's
``redis-server``/``redis-tools``; a missing binary fails, never skips) and stopped by PID. Each
test gets its own key prefix and the servers are flushed after it.

The tests themselves never name a backend.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis

from bot.lanes.base import LaneConfig, LaneFactory, LaneQueue
from bot.lanes.memory import MemoryLaneQueue
from bot.lanes.redis import RedisLaneQueue
from tests.fakes.redis_server import RedisClusterProcs, RedisServer

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis"),
    pytest.param("redis-cluster", id="redis-cluster"),
]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One standalone ``redis-server`` for the whole test session."""
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    """One 3-master Redis Cluster for the whole test session."""
    cluster = RedisClusterProcs.start(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


def flush(servers: list[RedisServer]) -> None:
    """FLUSHALL every running server (primaries of a cluster included)."""
    for server in servers:
        if server.proc is not None:
            with redis.Redis(host="127.0.0.1", port=server.port) as client:
                client.flushall()


def redis_url(request: pytest.FixtureRequest, backend: str) -> tuple[str, list[RedisServer]]:
    """The URL of the session's server (or cluster) of ``backend`` and its processes."""
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url, [server]
    cluster: RedisClusterProcs = request.getfixturevalue("redis_cluster")
    return cluster.url, cluster.nodes


def build_queue(backend: str, config: LaneConfig, url: str = "", prefix: str = "sb") -> LaneQueue:
    """A new, unstarted lane queue of ``backend``."""
    if backend == "memory":
        return MemoryLaneQueue(config)
    if backend in ("redis", "redis-cluster"):
        return RedisLaneQueue(config, url, prefix=prefix)
    raise ValueError(f"unknown lane backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def lane_factory(request: pytest.FixtureRequest) -> AsyncIterator[LaneFactory]:
    """Builds lane queues of the parametrized backend; closes them after the test."""
    backend: str = request.param
    url, servers = ("", []) if backend == "memory" else redis_url(request, backend)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    made: list[LaneQueue] = []

    def make(config: LaneConfig) -> LaneQueue:
        queue = build_queue(backend, config, url, prefix)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.close()
    flush(servers)


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix, so a test's lanes never meet another's on the shared server."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def make(
    redis_server: RedisServer, prefix: str
) -> AsyncIterator[Callable[..., RedisLaneQueue]]:
    """Builds Redis lane queues sharing ``prefix`` on the session's redis-server; closes them."""
    made: list[RedisLaneQueue] = []

    def build(config: LaneConfig | None = None, **kw: Any) -> RedisLaneQueue:
        queue = RedisLaneQueue(config or LaneConfig(), redis_server.url, prefix=prefix, **kw)
        made.append(queue)
        return queue

    yield build
    for queue in made:
        await queue.close()
