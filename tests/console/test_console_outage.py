"""A Redis outage as the console and the readiness probe see it, on a real ``redis-server``
stopped by its PID and started again: the console's health API and event stream report the
outage and the recovery, the page carries the banner, and ``/readyz`` reports it (still 200)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from bot import auth
from bot.console import setup_console
from bot.events_redis import RedisEventBus
from bot.lanes.base import LaneConfig
from bot.lanes.redis import RedisLaneQueue
from bot.server import HUB_KEY, readyz
from bot.store.sql import SqlStore
from tests.console.desk import Desk, open_desk
from tests.fakes.redis_server import RedisServer

PASSWORD = "correct horse battery"

Client = TestClient[web.Request, web.Application]


@dataclass
class ProbeHub:
    """What ``/readyz`` reads of the hub."""

    store: SqlStore
    lanes: RedisLaneQueue
    ready: bool = True


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
async def desk(
    tmp_path: Path, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Desk]:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    bus = RedisEventBus(redis.url, prefix=f"t{uuid.uuid4().hex[:8]}")
    await bus.start()
    try:
        async with open_desk(tmp_path) as d:
            await auth.add_agent(d.store, "alice", PASSWORD)
            yield Desk(d.settings, d.store, bus, d.tickets)
    finally:
        await bus.close()


@pytest.fixture
async def client(desk: Desk, redis: RedisServer) -> AsyncIterator[Client]:
    lanes = RedisLaneQueue(LaneConfig(), redis.url)
    app = web.Application()
    app[HUB_KEY] = ProbeHub(desk.store, lanes)  # type: ignore[misc]
    app.router.add_get("/readyz", readyz)
    setup_console(app, desk)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
            yield c
    finally:
        await lanes.close()


async def next_event(resp: ClientResponse, timeout_s: float = 15.0) -> tuple[str, Any]:
    """The next ``event:``/``data:`` pair of a Server-Sent Events stream (comments skipped)."""
    name = ""
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: ") and name:
                return name, json.loads(line[len("data: ") :])


async def test_console_and_readyz_report_a_redis_outage_and_its_end(
    client: Client, redis: RedisServer
) -> None:
    resp = await client.post("/console/api/login", json={"name": "alice", "password": PASSWORD})
    assert resp.status == 200
    page = await (await client.get("/console/")).text()
    assert 'data-testid="outage"' in page  # the banner, hidden while Redis answers
    assert (await (await client.get("/console/api/health")).json())["redis"] == "up"
    assert (await client.get("/readyz")).status == 200
    stream = await client.get("/console/api/events")
    name, ready = await next_event(stream)
    assert (name, ready["redis"]) == ("ready", "up")

    redis.stop()  # SIGTERM by PID

    name, data = await next_event(stream)
    assert (name, data["redis"]) == ("backend", "down")
    assert data["since"]
    health = await (await client.get("/console/api/health")).json()
    assert health == {"redis": "down", "since": data["since"]}
    probe = await client.get("/readyz")
    assert probe.status == 200  # the console stays reachable: it is where agents see this
    assert (await probe.json())["redis"] == "down"

    redis.restart()

    name, data = await next_event(stream)
    assert (name, data["redis"]) == ("backend", "up")
    assert (await (await client.get("/console/api/health")).json())["redis"] == "up"
    probe = await client.get("/readyz")
    assert probe.status == 200
    assert (await probe.json())["redis"] == "up"
    stream.close()


@pytest.mark.browser
@pytest.mark.timeout(60)
async def test_the_page_shows_the_outage_banner_and_clears_it(
    client: Client, redis: RedisServer
) -> None:
    from playwright.async_api import async_playwright, expect

    from tests.console.test_e2e_chromium import CHROMIUM, CHROMIUM_ARGS

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(str(client.make_url("/console/")))
            await page.get_by_test_id("login-name").fill("alice")
            await page.get_by_test_id("login-password").fill(PASSWORD)
            await page.get_by_test_id("login-submit").click()
            await expect(page.get_by_test_id("live-status")).to_have_attribute(
                "data-state", "live"
            )
            banner = page.get_by_test_id("outage")
            await expect(banner).to_be_hidden()

            redis.stop()
            await expect(banner).to_be_visible(timeout=15_000)
            await expect(banner).to_contain_text("Redis is unreachable since")

            redis.restart()
            await expect(banner).to_be_hidden(timeout=20_000)
            assert errors == []
        finally:
            await browser.close()
