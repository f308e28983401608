"""The HTTP server: health, readiness, metrics, errors, body cap, bind policy, graceful stop."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.channel import ChannelPlugin
from bot.compose import build_hub
from bot.errors import BackendUnavailable, ConfigError
from bot.hub import Hub
from bot.server import check_bind, is_loopback, make_app, run_server
from bot.store import open_store
from bot.store.base import Role
from channels.memory.pytest_plugin import ScriptedAgent, make_settings, started_hub
from channels.rest.plugin import RestChannel
from channels.rest.translate import rest_session_key
from channels.webchat.plugin import WebchatChannel
from tests.channels.support import serve

Client = TestClient[web.Request, web.Application]
MSG_URL = "/api/v1/conversations/{}/messages"


@pytest_asyncio.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    settings = make_settings(tmp_path / "data", max_body_bytes=2000)
    channels: list[ChannelPlugin] = [RestChannel(settings), WebchatChannel(settings)]
    async with started_hub(settings, agent=ScriptedAgent(), channels=channels) as h:
        yield h


@pytest_asyncio.fixture
async def client(hub: Hub) -> AsyncIterator[Client]:
    async with serve(make_app(hub)) as c:
        yield c


async def test_healthz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_readyz_follows_the_hub_and_the_store(
    client: Client, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await client.get("/readyz")).status == 200

    async def unreachable(*args: Any, **kwargs: Any) -> None:
        raise BackendUnavailable("database is gone")

    monkeypatch.setattr(hub.store, "conversation", unreachable)
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["error"] == "store unreachable"
    monkeypatch.undo()
    assert (await client.get("/readyz")).status == 200
    await hub.stop(timeout_s=1)
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    assert (await client.get("/healthz")).status == 200


async def test_metrics_count_messages_by_channel_and_sample_lanes(
    client: Client, hub: Hub
) -> None:
    before = await (await client.get("/metrics")).text()
    assert 'switchboard_messages_in_total{channel="rest"}' not in before
    resp = await client.post(
        MSG_URL.format("m1"), json={"text": "hi", "user": {"id": "u"}, "event_id": "e1"}
    )
    assert resp.status == 202
    await client.post(
        MSG_URL.format("m1"), json={"text": "hi", "user": {"id": "u"}, "event_id": "e1"}
    )
    page = await client.get(MSG_URL.format("m1"), params={"after": "1", "wait": "5"})
    assert (await page.json())["messages"][0]["role"] == "bot"
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    assert 'switchboard_messages_in_total{channel="rest"} 1.0' in text
    assert 'switchboard_duplicate_events_total{channel="rest"} 1.0' in text
    assert 'switchboard_messages_out_total{channel="rest",kind="answer"} 1.0' in text
    assert "switchboard_lane_depth 0.0" in text
    assert "switchboard_active_turns 0.0" in text
    assert "switchboard_turn_seconds_count 1.0" in text


async def test_errors_are_json(client: Client) -> None:
    resp = await client.get("/no/such/page")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert "error" in await resp.json()
    resp = await client.put(MSG_URL.format("x"), json={})
    assert resp.status == 405
    assert resp.content_type == "application/json"
    assert "Allow" in resp.headers


async def test_body_over_max_body_bytes_is_413(client: Client) -> None:
    big = b'{"text": "' + b"a" * 3000 + b'", "user": {"id": "u"}}'
    resp = await client.post(
        MSG_URL.format("b"), data=big, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert "limit" in (await resp.json())["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: capped while reading
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    resp = await client.post(
        MSG_URL.format("b"), data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert "error" in await resp.json()
    assert (await client.get(MSG_URL.format("b"))).status == 404


async def test_draining_hub_answers_503_with_retry_after(client: Client, hub: Hub) -> None:
    await hub.stop(timeout_s=1)
    resp = await client.post(MSG_URL.format("d"), json={"text": "hi", "user": {"id": "u"}})
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    assert "shutting down" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_bind_needs_api_keys_beyond_loopback() -> None:
    check_bind("127.0.0.1", api_keys_configured=False)
    check_bind("0.0.0.0", api_keys_configured=True)
    with pytest.raises(ConfigError, match="SWITCHBOARD_API_KEYS"):
        check_bind("0.0.0.0", api_keys_configured=False)


async def test_run_server_refuses_non_loopback_without_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    hub = await build_hub(
        settings, agent=ScriptedAgent(), channels=[RestChannel(settings)], load_knowledge=False
    )
    try:
        with pytest.raises(ConfigError, match=r"refusing to listen on '0\.0\.0\.0'"):
            await run_server(hub, "0.0.0.0", 0)
        assert hub.ready is False  # refused before anything started
    finally:
        await hub.store.close()


async def test_sigterm_stops_accepting_and_drains_running_turns(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", drain_timeout_s=5.0)
    settings.data_dir.mkdir(parents=True)
    agent = ScriptedAgent(delay_s=0.5)
    hub = await build_hub(
        settings, agent=agent, channels=[RestChannel(settings)], load_knowledge=False
    )
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        run_server(hub, "127.0.0.1", 0, on_listening=listening.set_result)
    )
    port = await asyncio.wait_for(listening, 10)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
        async with http.post(
            f"{base}{MSG_URL.format('s')}",
            json={"text": "answer me while draining", "user": {"id": "u"}},
        ) as resp:
            assert resp.status == 202
        await asyncio.wait_for(agent.started.wait(), 5)  # the turn is running
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(server, 10)
        assert hub.draining
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{base}/healthz"):
                pass
    store = await open_store(settings)
    try:
        stored = await store.messages(rest_session_key("s"))
    finally:
        await store.close()
    assert [(m.role, m.text) for m in stored] == [
        (Role.CUSTOMER, "answer me while draining"),
        (Role.BOT, "Echo: answer me while draining"),
    ]
