"""Telegram long polling with several processes on one real redis-server (issue 3).

Two ingress hubs share Redis lanes and one store, and both have the Telegram channel in
polling mode against the fake Bot API. Only the lease holder polls (the fake answers a second
concurrent ``getUpdates`` with 409 Conflict and counts it), every update is stored once, and
when the leader stops (gracefully, or dead without releasing its lease) the other one takes
over and keeps ingesting. A worker never polls but sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.channel import IngestReceipt
from bot.compose import build_hub
from bot.envelope import InboundMessage, OutboundMessage, SessionKey
from bot.hub import Hub
from bot.leader import KEY_PREFIX, retry_interval
from bot.worker import run_worker
from channels.memory.pytest_plugin import ScriptedAgent, make_settings
from channels.telegram.plugin import TelegramChannel
from tests.channels.telegram.harness import BOT_NAME, private_chat, telegram_settings, user
from tests.fakes.redis_server import RedisServer
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.lanes.harness import eventually as wait_until

pytestmark = pytest.mark.timeout(60)

LEASE_S = 1.5
LEASE_KEY = f"{KEY_PREFIX}telegram:{BOT_NAME}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A plain redis-server on a free loopback port."""
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


@pytest_asyncio.fixture
async def telegram_api() -> AsyncIterator[FakeTelegramAPI]:
    """A started fake Bot API server."""
    async with FakeTelegramAPI() as api:
        yield api


class Ingress:
    """One hub process's view: the hub and the receipts of what it ingested."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.accepted: list[str] = []
        self.duplicates: list[str] = []
        original = hub.ingest

        async def ingest(msg: InboundMessage) -> IngestReceipt:
            receipt = await original(msg)
            (self.duplicates if receipt.duplicate else self.accepted).append(msg.event_id)
            return receipt

        hub.ingest = ingest  # type: ignore[method-assign]

    @property
    def leading(self) -> bool:
        lease = self.hub.receivers.leases.get(LEASE_KEY)
        return lease is not None and lease.is_leader


@pytest_asyncio.fixture
async def make_hub(
    tmp_path: Path, redis_server: RedisServer, telegram_api: FakeTelegramAPI
) -> AsyncIterator[Any]:
    """``await make_hub(name, receive=True)``: a started hub of a deployment (stopped after)."""
    hubs: list[Hub] = []
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"

    async def make(name: str, *, receive: bool = True, start: bool = True) -> Hub:
        settings = make_settings(
            tmp_path / name,
            lane_backend="redis",
            redis_url=redis_server.url,
            database_url=database,
            receiver_lease_s=LEASE_S,
            queue_mode="followup",
            **telegram_settings(telegram_api, telegram_polling=True),
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        hub = await build_hub(
            settings,
            agent=ScriptedAgent(),
            channels=[TelegramChannel(settings)],
            load_knowledge=False,
            receive=receive,
        )
        hubs.append(hub)
        if start:
            await hub.start()
        return hub

    yield make
    for hub in reversed(hubs):
        await hub.stop(timeout_s=2.0)


def update(update_id: int, text: str) -> dict[str, Any]:
    """A private-chat text message update."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id + 50_000,
            "from": user(),
            "chat": private_chat(),
            "date": int(time.time()),
            "text": text,
        },
    }


async def push(api: FakeTelegramAPI, ids: range) -> None:
    for n in ids:
        await api.push_update(update(n, f"message {n}"))


def accepted(*ingress: Ingress) -> list[str]:
    return sorted((e for i in ingress for e in i.accepted), key=int)


async def test_one_poller_at_a_time_each_update_once_and_takeover_on_stop(
    make_hub: Any, telegram_api: FakeTelegramAPI
) -> None:
    a = Ingress(await make_hub("a"))
    b = Ingress(await make_hub("b"))
    await wait_until(lambda: a.leading or b.leading, 5)
    leader, follower = (a, b) if a.leading else (b, a)
    await push(telegram_api, range(1, 11))
    await wait_until(lambda: len(accepted(a, b)) == 10, 10)
    assert leader.accepted == [str(n) for n in range(1, 11)]
    assert follower.accepted == []
    await asyncio.sleep(LEASE_S)  # several renewals and follower retries
    assert not follower.leading

    await leader.hub.stop()
    await wait_until(lambda: follower.leading, retry_interval(LEASE_S) + 2)
    await push(telegram_api, range(11, 21))
    await wait_until(lambda: len(accepted(a, b)) == 20, 10)

    assert accepted(a, b) == [str(n) for n in range(1, 21)]  # each update stored once
    assert follower.accepted == [str(n) for n in range(11, 21)]
    assert telegram_api.max_concurrent_polls == 1
    assert telegram_api.conflicts == 0
    assert follower.duplicates == []  # the stopped leader confirmed what it had ingested
    await telegram_api.wait_for("sendMessage", count=20)
    await asyncio.sleep(0.3)  # a second answer would arrive now
    assert len(telegram_api.calls_of("sendMessage")) == 20  # one answer per message


async def test_a_dead_leader_is_replaced_within_the_lease_timeout(
    make_hub: Any, telegram_api: FakeTelegramAPI
) -> None:
    a = Ingress(await make_hub("a"))
    await wait_until(lambda: a.leading, 5)
    b = Ingress(await make_hub("b"))
    await push(telegram_api, range(1, 4))
    await wait_until(lambda: len(accepted(a, b)) == 3, 10)

    # Kill the leader's receiving as a crash would: no renewal, no release of the lock.
    lease = a.hub.receivers.leases[LEASE_KEY]
    assert lease._task is not None
    lease._task.cancel()
    channel = a.hub.channels["telegram"]
    assert isinstance(channel, TelegramChannel)
    await channel.stop_receiving()
    died = time.monotonic()
    await push(telegram_api, range(4, 7))
    await wait_until(lambda: b.leading, LEASE_S + retry_interval(LEASE_S) + 1)
    assert time.monotonic() - died >= LEASE_S / 2  # it waited for the lock to expire
    await wait_until(lambda: len(accepted(a, b)) == 6, 10)
    assert b.accepted == ["4", "5", "6"]
    assert telegram_api.max_concurrent_polls == 1
    assert telegram_api.conflicts == 0


async def test_a_worker_never_polls_but_sends(
    make_hub: Any, telegram_api: FakeTelegramAPI
) -> None:
    hub = await make_hub("worker", start=False)  # built to receive: run_worker overrides it
    stop = asyncio.Event()
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    running = asyncio.create_task(
        run_worker(hub, "127.0.0.1", 0, stop=stop, on_listening=listening)
    )
    await asyncio.wait_for(listening, 10)
    assert not hub.receives
    assert hub.receivers.leases == {}
    await asyncio.sleep(LEASE_S)
    assert telegram_api.calls_of("getUpdates") == []
    assert telegram_api.calls_of("deleteWebhook") == []
    key = SessionKey(f"telegram:{BOT_NAME}:dm:777001")
    await hub.channels["telegram"].send(OutboundMessage(session_key=key, text="from a worker"))
    [sent] = telegram_api.calls_of("sendMessage")
    assert sent.params["text"] == "from a worker"
    stop.set()
    await running


async def test_without_shared_lanes_two_pollers_conflict(
    tmp_path: Path, telegram_api: FakeTelegramAPI
) -> None:
    """What the leases prevent: two single-process hubs on one bot both poll (409s)."""
    hubs = []
    for name in ("x", "y"):
        settings = make_settings(
            tmp_path / name, **telegram_settings(telegram_api, telegram_polling=True)
        )
        settings.data_dir.mkdir(parents=True)
        hub = await build_hub(
            settings,
            agent=ScriptedAgent(),
            channels=[TelegramChannel(settings)],
            load_knowledge=False,
        )
        await hub.start()
        hubs.append(hub)
    try:
        await wait_until(lambda: telegram_api.conflicts >= 2, 5)
        assert telegram_api.max_concurrent_polls == 2
    finally:
        for hub in hubs:
            await hub.stop(timeout_s=1.0)
