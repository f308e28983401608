"""Auto-assignment under load: capacity is never exceeded, each conversation is assigned once.

Runs on SQLite (the handoff test bench) and on a real PostgreSQL shared by two whole hubs (built
by ``build_hub`` and started, as two processes would be), escalating and resolving concurrently
from both.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.compose import build_hub
from bot.config import Settings
from bot.envelope import InboundMessage, Participant, SessionKey
from bot.envelope import session_key as make_key
from bot.hub import Hub
from bot.store.base import AgentAccount, AgentRole, SessionMode
from bot.store.engine import make_engine
from bot.store.routing_records import Presence, Team
from bot.store.sql import SqlStore
from bot.store.tables import metadata as store_metadata
from plugins.ticketing.local import metadata as ticket_metadata
from tests.console.desk import Desk, open_desk
from tests.console.test_e2e_chromium import ScriptedAgent
from tests.fakes.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

AGENTS = [f"agent{i}" for i in range(5)]
CAPACITY = 3
SESSIONS = 50


async def _staff(desk: Desk | Hub) -> None:
    for name in AGENTS:
        await desk.store.create_agent(
            AgentAccount(name=name, display_name=name.title(), password_hash="x")
        )
        await desk.store.set_agent_status(name, presence=Presence.ONLINE, seen=True)


async def _loads(desk: Desk | Hub) -> Counter[str]:
    human = await desk.store.conversations(modes=[SessionMode.HUMAN], limit=10_000)
    return Counter(c.assigned_agent for c in human if c.assigned_agent)


async def _assign_counts(desk: Desk | Hub) -> Counter[str]:
    store = desk.store
    assert isinstance(store, SqlStore)
    records = await store.audit_records(limit=10_000)
    return Counter(r.session_key for r in records if r.action == "assign" and r.session_key)


async def _run(desks: Sequence[Desk | Hub], keys: list[SessionKey]) -> None:
    """50 concurrent escalations over ``desks``; then agents resolve until all were served."""
    first = desks[0]
    await asyncio.gather(
        *(
            desks[i % len(desks)].handoff.escalate(key, "customer_request")
            for i, key in enumerate(keys)
        )
    )
    loads = await _loads(first)
    # Round-robin among equals: everyone is full, nobody over capacity.
    assert loads == Counter({name: CAPACITY for name in AGENTS})
    served: set[SessionKey] = set()
    for _ in range(SESSIONS):
        human = await first.store.conversations(modes=[SessionMode.HUMAN], limit=10_000)
        if not human:
            break
        assert max((await _loads(first)).values()) <= CAPACITY
        # Every owner resolves what they hold, from both hubs at once: freed room is handed out.
        await asyncio.gather(
            *(
                desks[i % len(desks)].handoff.resolve(
                    c.session_key,
                    AgentAccount(name=c.assigned_agent or "", display_name="x", password_hash="x"),
                )
                for i, c in enumerate(human)
            )
        )
        served.update(c.session_key for c in human)
    assert served == set(keys)
    counts = await _assign_counts(first)
    assert {k: counts[k] for k in keys} == dict.fromkeys(keys, 1)  # each exactly once
    queued = await first.store.conversations(modes=[SessionMode.QUEUED], limit=10_000)
    assert queued == []


async def test_fifty_escalations_five_agents_sqlite(tmp_path: Path) -> None:
    async with open_desk(tmp_path, agent_capacity=CAPACITY) as desk:
        await _staff(desk)
        keys = [await desk.customer_says("help", chat=f"c{i}") for i in range(SESSIONS)]
        await _run([desk], keys)


@pytest.fixture
async def shared_postgres(postgres_url: str) -> str:
    engine = make_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(ticket_metadata.drop_all)
            await conn.run_sync(store_metadata.drop_all)
    finally:
        await engine.dispose()
    return postgres_url


async def test_fifty_escalations_five_agents_two_hubs_on_postgres(
    tmp_path: Path, shared_postgres: str
) -> None:
    """Two whole hubs (as two processes) on one PostgreSQL database, escalating at once."""
    hubs: list[Hub] = []
    try:
        for name in ("hub-a", "hub-b"):
            settings = Settings(
                data_dir=tmp_path / name,
                database_url=shared_postgres,
                agent_capacity=CAPACITY,
                assignment_sweep_s=3600,  # the test drives the queue itself
                demo_site=False,
            )
            hub = await build_hub(settings, agent=ScriptedAgent(), load_knowledge=False)
            await hub.start()
            hubs.append(hub)
        await _staff(hubs[0])
        keys = []
        for i in range(SESSIONS):
            key = make_key("rest", "default", chat=f"c{i}")
            await hubs[0].store.append_inbound(
                InboundMessage(
                    event_id=f"e{i}",
                    channel="rest",
                    account="default",
                    session_key=key,
                    sender=Participant(id=f"u{i}", name="Dana"),
                    text="help",
                )
            )
            keys.append(key)
        await _run(hubs, keys)
    finally:
        for hub in hubs:
            await hub.stop(0)


async def test_team_queue_waits_for_a_member(tmp_path: Path) -> None:
    async with open_desk(tmp_path, agent_capacity=1) as desk:
        for name in ("alice", "bob"):
            await desk.store.create_agent(
                AgentAccount(name=name, display_name=name.title(), password_hash="x")
            )
            await desk.store.set_agent_status(name, presence=Presence.ONLINE, seen=True)
        await desk.store.save_team(
            Team("api", "API customers", channels=("rest",), members=("bob",))
        )
        first = await desk.customer_says("help", chat="one")
        second = await desk.customer_says("help", chat="two")
        conv = await desk.handoff.escalate(first, "customer_request")
        assert (conv.mode, conv.assigned_agent) == (SessionMode.HUMAN, "bob")
        # Bob is full; Alice is online with room but not in the team: the second one waits.
        conv = await desk.handoff.escalate(second, "customer_request")
        assert conv.mode is SessionMode.QUEUED
        routing = (await desk.store.routings([second]))[second]
        assert routing.team == "api"
        bob = await desk.store.agent("bob")
        assert bob is not None
        await desk.handoff.resolve(first, bob)
        conv2 = await desk.store.conversation(second)
        assert conv2 is not None
        assert (conv2.mode, conv2.assigned_agent) == (SessionMode.HUMAN, "bob")
        assert any("Bob from our team joined" in o.text for o in desk.sent_to(second))


async def test_offline_agent_gets_nothing_until_online(tmp_path: Path) -> None:
    async with open_desk(tmp_path, presence_timeout_s=0.05) as desk:
        await desk.store.create_agent(
            AgentAccount(name="alice", display_name="Alice", password_hash="x")
        )
        await desk.store.set_agent_status("alice", presence=Presence.ONLINE, seen=True)
        await asyncio.sleep(0.1)
        # The console session went away: the sweep's presence expiry takes her offline.
        assert await desk.handoff.assignment.expire_presence() == ["alice"]
        key = await desk.customer_says("help")
        conv = await desk.handoff.escalate(key, "customer_request")
        assert conv.mode is SessionMode.QUEUED
        await desk.handoff.assignment.set_presence("alice", Presence.ONLINE, actor="alice")
        conv2 = await desk.store.conversation(key)
        assert conv2 is not None
        assert (conv2.mode, conv2.assigned_agent) == (SessionMode.HUMAN, "alice")


async def test_manual_claim_and_transfer_respect_capacity(tmp_path: Path) -> None:
    async with open_desk(tmp_path, agent_capacity=1, auto_assign=False) as desk:
        for name, role in (("alice", AgentRole.AGENT), ("bob", AgentRole.AGENT)):
            await desk.store.create_agent(
                AgentAccount(name=name, display_name=name.title(), password_hash="x", role=role)
            )
            await desk.store.set_agent_status(name, presence=Presence.AWAY, seen=True)
        alice, bob = await desk.store.agent("alice"), await desk.store.agent("bob")
        assert alice is not None
        assert bob is not None
        one = await desk.customer_says("help", chat="one")
        two = await desk.customer_says("help", chat="two")
        for key in (one, two):
            await desk.handoff.escalate(key, "customer_request")
        await desk.handoff.claim(one, alice)
        await desk.handoff.claim(two, bob)
        from bot.store.assignment import AtCapacity

        with pytest.raises(AtCapacity):
            await desk.handoff.assignment.transfer(one, alice, to_agent="bob")
        await desk.handoff.resolve(two, bob)
        conv = await desk.handoff.assignment.transfer(one, alice, to_agent="bob")
        assert conv.assigned_agent == "bob"
        # To a team queue: waiting again (auto-assignment is off here).
        conv = await desk.handoff.assignment.transfer(one, bob, to_team="")
        assert conv.mode is SessionMode.QUEUED


async def test_two_stores_share_the_tables(tmp_path: Path, shared_postgres: str) -> None:
    """The status rows the lock relies on exist once, whichever hub made them."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            open_desk(tmp_path / "a", database_url=shared_postgres)
        )
        b = await stack.enter_async_context(
            open_desk(tmp_path / "b", database_url=shared_postgres)
        )
        await a.store.set_agent_status("zed", presence=Presence.ONLINE)
        await b.store.set_agent_status("zed", capacity=7)
        [status] = await a.store.agent_statuses()
        assert (status.presence, status.capacity) == (Presence.ONLINE, 7)
        engine = make_engine(shared_postgres)
        try:
            async with engine.connect() as conn:
                n = await conn.scalar(sa.text("select count(*) from agent_status"))
        finally:
            await engine.dispose()
        assert n == 1


async def test_disabled_accounts_and_viewers_are_never_assigned(tmp_path: Path) -> None:
    async with open_desk(tmp_path) as desk:
        for name, role, active in (
            ("gone", AgentRole.AGENT, False),
            ("vic", AgentRole.VIEWER, True),
            ("ann", AgentRole.AGENT, True),
        ):
            await desk.store.create_agent(
                AgentAccount(name, name.title(), "x", active=active, role=role)
            )
            await desk.store.set_agent_status(name, presence=Presence.ONLINE, seen=True)
        convs = []
        for chat in ("one", "two", "three"):
            key = await desk.customer_says("help", chat=chat)
            convs.append(await desk.handoff.escalate(key, "customer_request"))
        assert {c.assigned_agent for c in convs} == {"ann"}


async def test_the_least_loaded_agent_gets_it_and_equals_take_turns(tmp_path: Path) -> None:
    """Three online agents: escalations go round the three (each to the one assigned longest
    ago among the least loaded), and an agent who resolved one is next in line."""
    async with open_desk(tmp_path, agent_capacity=5) as desk:
        for name in ("alice", "bob", "carol"):
            await desk.store.create_agent(
                AgentAccount(name=name, display_name=name.title(), password_hash="x")
            )
            await desk.store.set_agent_status(name, presence=Presence.ONLINE, seen=True)
        order: list[str] = []
        keys: list[SessionKey] = []
        for i in range(6):
            key = await desk.customer_says("help", chat=f"rr{i}")
            conv = await desk.handoff.escalate(key, "customer_request")
            assert conv.mode is SessionMode.HUMAN
            order.append(conv.assigned_agent or "")
            keys.append(key)
        assert sorted(order[:3]) == ["alice", "bob", "carol"]  # each once before anyone twice
        assert order[3:] == order[:3]  # then in the same turn order
        # Bob resolves one: he is the least loaded now, so the next one is his.
        bob = await desk.store.agent(order[1])
        assert bob is not None
        await desk.handoff.resolve(keys[1], bob)
        key = await desk.customer_says("help", chat="rr-next")
        conv = await desk.handoff.escalate(key, "customer_request")
        assert conv.assigned_agent == order[1]
