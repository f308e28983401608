"""Rate-limit counters shared across processes through Redis (bot/rate_limits.py).

Two limiters built from the same settings stand for two ingress processes: a login name locked
out through one is locked out through the other, on a real redis-server and on a real 3-master
Redis Cluster. With memory lanes each process counts alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.auth import LoginLimiter
from bot.config import Settings
from bot.errors import BackendUnavailable, RateLimited
from bot.rate_limits import counter_storage, limits_uri
from tests.fakes.redis_server import RedisClusterProcs, RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path_factory.mktemp("redis-limits"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    cluster = RedisClusterProcs.start(tmp_path_factory.mktemp("redis-cluster-limits"))
    yield cluster
    cluster.stop()


def _settings(tmp_path: Path, url: str | None) -> Settings:
    if url is None:
        return Settings(data_dir=tmp_path)
    return Settings(data_dir=tmp_path, lane_backend="redis", redis_url=url)


async def _lock_out(a: LoginLimiter, b: LoginLimiter, name: str) -> None:
    """Three failures through ``a``, then ``b`` must refuse the name."""
    for _ in range(3):
        await a.check(name, "10.0.0.1")
        await a.failed(name, "10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        await b.check(name, "10.0.0.2")
    assert refused.value.retry_after is not None
    assert 1.0 <= refused.value.retry_after <= 60.0


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
async def test_a_lockout_through_one_ingress_holds_on_every_ingress(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = request.getfixturevalue("redis_cluster").url
    settings = _settings(tmp_path, url)
    first = LoginLimiter(per_name=3, window_minutes=1, storage=counter_storage(settings))
    second = LoginLimiter(per_name=3, window_minutes=1, storage=counter_storage(settings))
    name = f"ann-{backend}"
    await _lock_out(first, second, name)
    # A successful login (through the other process) clears the name's failures everywhere.
    await second.succeeded(name)
    await first.check(name, "10.0.0.3")


async def test_memory_counters_are_per_process(tmp_path: Path) -> None:
    settings = _settings(tmp_path, None)
    first = LoginLimiter(per_name=3, window_minutes=1, storage=counter_storage(settings))
    second = LoginLimiter(per_name=3, window_minutes=1, storage=counter_storage(settings))
    for _ in range(3):
        await first.failed("bob", "10.0.0.1")
    with pytest.raises(RateLimited):
        await first.check("bob", "10.0.0.1")
    await second.check("bob", "10.0.0.1")  # another process: its own count


async def test_unreachable_counters_refuse_with_backend_unavailable(tmp_path: Path) -> None:
    from tests.fakes.redis_server import free_port

    settings = _settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    limiter = LoginLimiter(storage=counter_storage(settings))
    with pytest.raises(BackendUnavailable, match="rate-limit counters"):
        await limiter.check("carol", "10.0.0.1")
    with pytest.raises(BackendUnavailable):
        await limiter.failed("carol", "10.0.0.1")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", ("async+redis://127.0.0.1:6379/0", False)),
        ("rediss://:pw@cache:6380/1", ("async+rediss://:pw@cache:6380/1", False)),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            ("async+redis+cluster://10.0.0.1:7000,10.0.0.2:7001", True),
        ),
        (
            "redis://10.0.0.1:7000,redis://10.0.0.2:7001",
            ("async+redis+cluster://10.0.0.1:7000,10.0.0.2:7001", True),
        ),
    ],
)
def test_limits_uri_maps_every_redis_url_form(url: str, expected: tuple[str, bool]) -> None:
    assert limits_uri(url) == expected


def test_limits_uri_refuses_what_is_not_redis() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        limits_uri("memcached://127.0.0.1:11211")
