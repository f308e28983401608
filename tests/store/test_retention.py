"""Retention: expired conversations and audit entries go; the audit chain still verifies."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import bot.store.sql
from bot.compose import build_hub
from bot.config import Settings
from bot.envelope import InboundMessage, Participant, SessionKey, session_key, utcnow
from bot.hub.retention import RetentionSweeper
from bot.privacy.audit_chain import Fault
from bot.store.base import SessionMode
from bot.store.retention import RetentionPolicy, RetentionReport
from bot.store.sql import SqlStore
from channels.memory.pytest_plugin import ScriptedAgent, make_settings
from plugins.ticketing.local import LocalTicketBackend
from tests.fakes.redis_server import RedisServer
from tests.store.databases import count


@contextmanager
def _days_later(monkeypatch: pytest.MonkeyPatch, days: int) -> Iterator[None]:
    """The store's clock (every write's time) runs ``days`` ahead."""
    monkeypatch.setattr(bot.store.sql, "utcnow", lambda: utcnow() + timedelta(days=days))
    try:
        yield
    finally:
        monkeypatch.setattr(bot.store.sql, "utcnow", utcnow)


async def _conversation(store: SqlStore, user: str) -> SessionKey:
    key = session_key("rest", "default", dm_peer=user)
    msg = InboundMessage(
        event_id=f"{user}-1",
        channel="rest",
        account="default",
        session_key=key,
        sender=Participant(id=user),
        text="hello",
    )
    await store.append_inbound(msg)
    await store.mark_handled(key, [msg.event_id])
    return key


async def test_expired_records_are_deleted_and_the_chain_still_verifies(
    store: SqlStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = await _conversation(store, "idle-user")
    held = await _conversation(store, "held-user")
    await store.set_mode(held, SessionMode.HUMAN, agent="ann")
    tickets = LocalTicketBackend.for_store(store)
    ticket = await tickets.create(
        subject="s",
        description="d",
        requester=Participant(id="idle-user"),
        channel="rest",
        session_key=idle,
    )
    await tickets.comment(ticket.id, "ann", "noted")
    for i in range(3):
        await store.audit("ann", "claim", idle, {"i": i})
    policy = RetentionPolicy(conversation_days=365, audit_days=730)

    assert (await store.apply_retention(policy)).deleted == {}  # nothing is old yet

    with _days_later(monkeypatch, 400):
        fresh = await _conversation(store, "new-user")
        report = await store.apply_retention(policy)
        await store.audit("ann", "claim", fresh, {"i": 3})
    assert report.deleted == {
        "conversations": 1,
        "messages": 1,
        "tickets": 1,
        "ticket_comments": 1,
    }
    assert await store.conversation(idle) is None
    assert await store.conversation(held) is not None  # a human holds it
    assert await count(settings, "audit") == 4

    with _days_later(monkeypatch, 800):
        report = await store.apply_retention(policy)
        assert (await store.apply_retention(policy)).deleted == {}  # nothing more, no churn
    assert report.deleted["audit"] == 3
    assert report.deleted["conversations"] == 1  # new-user's; held-user's is still held
    check = await store.verify_audit()
    assert check.ok, check.chain.problems
    assert check.anchor is not None
    assert check.anchor.seq == 3
    assert check.chain.entries == 2  # the entry of day 400 and the pruning's
    assert report.audit_head == check.chain.head  # what the sweeper logs

    # Deleting beyond what retention recorded is caught.
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("delete from audit where seq = 4")
    check = await store.verify_audit()
    assert [(p.seq, p.fault) for p in check.chain.problems] == [(5, Fault.DELETED)]


class _CountingStore:
    """Counts the sweeps that reach the store (the lease, not the deletion, is under test)."""

    def __init__(self) -> None:
        self.sweeps = 0
        self.swept = asyncio.Event()

    async def apply_retention(self, policy: RetentionPolicy) -> RetentionReport:
        self.sweeps += 1
        self.swept.set()
        return RetentionReport()


async def test_one_process_sweeps_at_a_time(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path)
    clients = [aioredis.from_url(server.url) for _ in range(2)]
    settings = Settings(data_dir=tmp_path, retention_sweep_s=0.05, receiver_lease_s=1.0)
    stores = [_CountingStore(), _CountingStore()]
    sweepers = [RetentionSweeper(settings, st, c) for st, c in zip(stores, clients, strict=True)]
    try:
        for sweeper in sweepers:
            sweeper.start()
        waits = [asyncio.ensure_future(st.swept.wait()) for st in stores]
        await asyncio.wait(waits, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.5)  # ten sweep intervals
        assert sorted(st.sweeps == 0 for st in stores) == [False, True]
        leader = next(i for i, st in enumerate(stores) if st.sweeps)
        assert stores[leader].sweeps >= 3
        await sweepers[leader].stop()  # the other process takes over
        await asyncio.wait_for(waits[1 - leader], timeout=20)
    finally:
        for sweeper in sweepers:
            await sweeper.stop()
        for client in clients:
            await client.aclose()
        server.stop()


async def test_the_hub_sweeps_when_it_starts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", retention_audit_days=1)
    settings.data_dir.mkdir(parents=True)
    hub = await build_hub(settings, agent=ScriptedAgent(), load_knowledge=False, channels=[])
    await hub.start()
    try:
        assert hub.retention.enabled
        await asyncio.wait_for(hub.retention.swept.wait(), timeout=20)
    finally:
        await hub.stop(timeout_s=2.0)
    off = make_settings(
        tmp_path / "off",
        retention_conversation_days=0,
        retention_message_days=0,
        retention_audit_days=0,
    )
    assert not RetentionSweeper(off, hub.store).enabled
