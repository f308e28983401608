"""Data-subject requests reach the lanes: messages waiting in Redis, a turn answering them now.

Zofia and Oskar write; their messages wait in the lanes. Export lists hers as queued lane
state; erasure takes them out without touching Oskar's, which are still answered afterwards,
and no Redis key holds anything of hers. A turn answering her while the erasure runs is waited
for, never cut: its reply is erased with the rest and her next message is never answered.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.cli import main
from bot.compose import build_hub
from bot.config import Settings
from bot.envelope import SessionKey
from bot.errors import BackendUnavailable
from bot.lanes.memory import MemoryLaneQueue
from bot.server import make_app
from bot.store.base import Role
from bot.store.sql import SqlStore
from bot.store.subjects import Subject
from bot.subjects import SubjectRequests
from channels.memory.pytest_plugin import ScriptedAgent, make_settings
from tests.channels.support import serve
from tests.fakes.redis_server import RedisServer
from tests.store.test_subjects import GROUP, OSKAR, ZOFIA, dm, said

EMAIL = "zofia.w@example.org"  # ZOFIA's (tests.store.test_subjects)
HER_TEXTS = ["my card ending 4242 was charged twice", "call me on +48 601 234 567"]
SECRETS = [ZOFIA.id, EMAIL, "Zofia Wiśniewska", *HER_TEXTS, "zofia in the group"]


MESSAGES = [
    said(ZOFIA, dm(ZOFIA), "u1", HER_TEXTS[0]),
    said(ZOFIA, dm(ZOFIA), "u2", HER_TEXTS[1]),
    said(OSKAR, dm(OSKAR), "u3", "where is my refund for order 77?"),
    said(OSKAR, GROUP, "u4", "anyone else waiting for refunds?"),
    said(ZOFIA, GROUP, "u5", "zofia in the group: me too"),
    said(OSKAR, GROUP, "u6", f"ask {EMAIL}, she knows"),
]


def redis_dump(url: str) -> dict[str, str]:
    """Every key of the server with its whole value as text."""
    out: dict[str, str] = {}
    with redis.Redis.from_url(url, decode_responses=True) as client:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            value: Any
            if kind == "string":
                value = client.get(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1)
            else:
                value = sorted(client.smembers(key))
            out[key] = json.dumps(value, ensure_ascii=False)
    return out


def holding(dump: dict[str, str], values: list[str]) -> list[str]:
    return sorted(k for k, v in dump.items() if any(x in k or x in v for x in values))


async def _ingest(settings: Settings) -> None:
    """An ingress-only process takes every message; no worker runs: they wait in Redis."""
    hub = await build_hub(
        settings, agent=ScriptedAgent(), load_knowledge=False, channels=[], consume=False
    )
    await hub.start()
    try:
        for msg in MESSAGES:
            assert not (await hub.ingest(msg)).duplicate
        await asyncio.sleep(0.3)  # the enqueue marks ride the event publisher's next pipeline
    finally:
        await hub.stop(timeout_s=2.0)


async def _answered(settings: Settings) -> dict[SessionKey, list[str]]:
    """A worker process runs what waits; returns the bot's replies per session."""
    hub = await build_hub(settings, agent=ScriptedAgent(), load_knowledge=False, channels=[])
    store = hub.store
    await hub.start()
    try:
        replies: dict[SessionKey, list[str]] = {}
        for _ in range(200):
            for key in (dm(OSKAR), GROUP, dm(ZOFIA)):
                stored = await store.messages(key)
                replies[key] = [m.text for m in stored if m.role == Role.BOT]
            if replies[dm(OSKAR)] and replies[GROUP]:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time enough for a turn of hers, were one left
        replies[dm(ZOFIA)] = [m.text for m in await store.messages(dm(ZOFIA))]
        return replies
    finally:
        await hub.stop(timeout_s=2.0)


def test_the_command_line_exports_and_erases_what_waits_in_redis_lanes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer.start(tmp_path / "redis")
    try:
        monkeypatch.delenv("SWITCHBOARD_DATABASE_URL", raising=False)
        monkeypatch.setenv("SWITCHBOARD_LANE_BACKEND", "redis")
        monkeypatch.setenv("SWITCHBOARD_REDIS_URL", server.url)
        data = tmp_path / "data"
        data.mkdir()
        settings = make_settings(data, lane_backend="redis", redis_url=server.url)
        asyncio.run(_ingest(settings))
        with redis.Redis.from_url(server.url) as client:  # what the e-mail channel counts
            client.rpush(f"sb:limits:LIMITER/{EMAIL}/20/1/hour", "1700000000")
        before = redis_dump(server.url)
        assert len(holding(before, SECRETS)) >= 4  # her lane's keys, the ready zset, marks
        where = ["--data-dir", str(data)]
        capsys.readouterr()

        assert main(["customer", "export", f"telegram:{ZOFIA.id}", *where]) == 0
        doc = json.loads(capsys.readouterr().out)
        queued = doc["queued_lane_state"]
        assert (queued["backend"], queued["reachable"]) == ("redis", True)
        got = sorted((m["envelope"]["event_id"], m["match"]) for m in queued["messages"])
        assert got == [("u1", "theirs"), ("u2", "theirs"), ("u5", "theirs"), ("u6", "mentions")]
        assert {m["in_turn"] for m in queued["messages"]} == {False}
        assert HER_TEXTS[0] in json.dumps(queued)
        # The rate-limit counter that names her e-mail address is in the export too.
        [counter] = doc["rate_limit_counters"]["counters"]
        assert counter["key"] == f"sb:limits:LIMITER/{EMAIL}/20/1/hour"

        assert main(["customer", "erase", f"telegram:{ZOFIA.id}", "--yes", *where]) == 0
        report = json.loads(capsys.readouterr().out)
        lanes = report["elsewhere"]["lanes"]
        assert lanes["backend"] == "redis"
        assert (lanes["removed"], lanes["scrubbed"], lanes["lanes_dropped"]) == (3, 1, 1)
        assert lanes["rate_counters"] == 1
        assert lanes["marks_deleted"] == 2  # the enqueue marks of her two direct messages

        after = redis_dump(server.url)
        assert holding(after, SECRETS) == []  # no key, no value of any kind holds her
        assert holding(after, ["where is my refund", "ask [erased], she knows"])  # his wait

        replies = asyncio.run(_answered(settings))
        assert replies[dm(OSKAR)] == ["Echo: where is my refund for order 77?"]
        assert replies[GROUP] == [
            "Echo: anyone else waiting for refunds?\nask [erased], she knows"
        ]
        assert replies[dm(ZOFIA)] == []  # nothing of hers was answered, or stored again
    finally:
        server.stop()


async def test_erasure_waits_for_the_turn_answering_her_and_never_answers_the_rest(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()

    async def reply(turn: Any) -> Any:
        from bot.agent import AgentReply

        if turn.messages[0].sender.id == ZOFIA.id:
            await gate.wait()
        return AgentReply(text="noted")

    settings = make_settings(tmp_path / "data", admin_api_keys=["admin-key-123"])
    settings.data_dir.mkdir(parents=True)
    agent = ScriptedAgent(reply)
    hub = await build_hub(settings, agent=agent, load_knowledge=False, channels=[])
    assert isinstance(hub.lanes, MemoryLaneQueue)
    store = hub.store
    assert isinstance(store, SqlStore)
    await hub.start()
    try:
        await hub.ingest(MESSAGES[0])
        await asyncio.wait_for(agent.started.wait(), 10)  # her turn runs, held at the gate
        subject = Subject(channel="telegram", user_id=ZOFIA.id)

        hurried = SubjectRequests(store, settings=settings, lanes=hub.lanes, wait_s=0.3)
        with pytest.raises(BackendUnavailable, match="still running"):
            await hurried.erase(subject, actor="cli")
        assert await store.conversation(dm(ZOFIA)) is not None  # nothing else was erased

        await hub.ingest(MESSAGES[1])  # waits behind the running turn in her lane
        async with serve(make_app(hub)) as client:
            body = {"channel": "telegram", "user_id": ZOFIA.id, "confirm": True}
            erase = asyncio.ensure_future(
                client.post(
                    "/api/v1/admin/privacy/erase",
                    json=body,
                    headers={"Authorization": "Bearer admin-key-123"},
                )
            )
            await asyncio.sleep(0.5)
            assert not erase.done()  # waiting for the turn, not cutting it
            gate.set()
            resp = await asyncio.wait_for(erase, 20)
            assert resp.status == 200, await resp.text()
            lanes = (await resp.json())["elsewhere"]["lanes"]
        assert (lanes["backend"], lanes["reachable"], lanes["removed"]) == ("memory", True, 1)
        assert await store.conversation(dm(ZOFIA)) is None
        assert await store.messages(dm(ZOFIA)) == []  # the turn's reply went with the rest
        await asyncio.sleep(0.3)
        assert [m.event_id for t in agent.turns for m in t.messages] == ["u1"]  # u2: never
    finally:
        gate.set()
        await hub.stop(timeout_s=2.0)
