"""ScriptBatcher on a real redis-server: concurrent script calls share one pipeline, each keeps
its own reply, order and error; scripts the server forgot are loaded again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bot.lanes.redis.batcher import ScriptBatcher
from bot.lanes.redis.client import connect
from tests.fakes.redis_server import RedisServer, free_port

APPEND = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])"
FAIL_ON_X = "if ARGV[1] == 'x' then return redis.error_reply('refused x') end return ARGV[1]"


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    c = connect(redis_server.url)
    await c.flushall()
    yield c
    await c.aclose()


async def _calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_concurrent_calls_go_out_as_one_pipeline_in_order(
    client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = client.register_script(APPEND)
    await script(keys=["warm"], args=["0"])  # loaded once, as the lanes do at start
    pipelines: list[Any] = []
    real = client.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        pipelines.append(real(*args, **kwargs))
        return pipelines[-1]

    monkeypatch.setattr(client, "pipeline", counting)
    batcher = ScriptBatcher(client)
    before = await _calls(client, "evalsha")
    lengths = await asyncio.gather(*(batcher(script, ["lane"], [str(i)]) for i in range(200)))
    assert lengths == list(range(1, 201))  # each call ran alone, in call order
    assert await client.lrange("lane", 0, -1) == [str(i) for i in range(200)]
    assert await _calls(client, "evalsha") - before == 200
    assert len(pipelines) == 1

    # Calls made in different loop passes are not held back for one another.
    first = await batcher(script, ["solo"], ["a"])
    second = await batcher(script, ["solo"], ["b"])
    assert (first, second) == (1, 2)


async def test_a_script_error_fails_only_its_own_call(client: aioredis.Redis) -> None:
    script = client.register_script(FAIL_ON_X)
    await script(keys=["k"], args=["warm"])
    batcher = ScriptBatcher(client)
    results = await asyncio.gather(
        *(batcher(script, ["k"], [a]) for a in ["a", "x", "b"]), return_exceptions=True
    )
    assert results[0] == "a"
    assert isinstance(results[1], ResponseError)
    assert "refused x" in str(results[1])
    assert results[2] == "b"


async def test_scripts_the_server_forgot_are_loaded_again(client: aioredis.Redis) -> None:
    script = client.register_script(APPEND)
    await script(keys=["warm"], args=["0"])
    await client.script_flush()  # as after a restart without the script cache
    batcher = ScriptBatcher(client)
    lengths = await asyncio.gather(*(batcher(script, ["again"], [str(i)]) for i in range(5)))
    assert sorted(lengths) == [1, 2, 3, 4, 5]
    assert await client.llen("again") == 5


async def test_an_unreachable_server_fails_every_call_of_the_pipeline() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", retries=0)
    assert isinstance(client, aioredis.Redis)
    script = client.register_script(APPEND)
    batcher = ScriptBatcher(client)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(batcher(script, ["k"], [str(i)]) for i in range(3)), return_exceptions=True
            ),
            timeout=10,
        )
    finally:
        await client.aclose()
    assert all(isinstance(r, RedisConnectionError) for r in results), results
