"""Alembic migrations: an empty database at head matches the models and serves the store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from bot.config import Settings
from bot.desk.store import DeskStore
from bot.envelope import Citation, InboundMessage, Participant, session_key
from bot.errors import ConfigError
from bot.store import migrate, open_store
from bot.store.base import AgentAccount, AgentRole, NewMessage, Role, SessionMode
from bot.store.engine import make_engine
from plugins.ticketing.links import metadata as ticket_link_metadata
from plugins.ticketing.local import LocalTicketBackend
from tests.fakes.postgres import PostgresServer

TABLES = {
    "conversations",
    "messages",
    "agents",
    "audit",
    "tickets",
    "ticket_comments",
    "outbox",
    "agent_profiles",
    "ticket_links",
    "ticket_sync_events",
    "teams",
    "team_members",
    "agent_status",
    "conversation_routing",
    "sla_policies",
    "sla_timers",
    "csat_ratings",
    "canned_replies",
    "llm_usage",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on a new, empty database (a database of its own on the PostgreSQL server)."""
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return Settings(data_dir=tmp_path / "data", database_url=server.create_database())


async def _tables(settings: Settings) -> set[str]:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _execute(settings: Settings, sql: str) -> None:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(sql))
    finally:
        await engine.dispose()


def test_one_head_after_the_baseline() -> None:
    assert migrate.BASELINE == "0001"
    # No literal head (revisions are re-chained at merge): one head, reached from the baseline.
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [migrate.head_revision()]
    chain = [r.revision for r in script.walk_revisions(migrate.BASELINE, "heads")]
    assert chain[-1] == migrate.BASELINE
    assert {"0003", "0007"} <= set(chain)


async def test_upgrade_empty_database_matches_the_models(empty: Settings) -> None:
    assert await migrate.current(empty) is None
    assert await migrate.upgrade(empty) == migrate.head_revision()
    assert await _tables(empty) == TABLES | {"alembic_version"}
    assert await migrate.current(empty) == migrate.head_revision()
    assert await migrate.drift(empty) == []
    # Running it again changes nothing.
    assert await migrate.upgrade(empty) == migrate.head_revision()


async def test_drift_is_reported(empty: Settings) -> None:
    await migrate.upgrade(empty)
    await _execute(empty, "drop index ix_messages_handled")
    await _execute(empty, "alter table agents add column note varchar(10)")
    expected = ["add_index", "remove_column"]
    if empty.database_url:  # PostgreSQL: a timestamptz column turned into text is drift too
        await _execute(empty, "alter table audit alter column at type varchar(26)")
        expected.append("modify_type")
    diffs = await migrate.drift(empty)
    kinds = sorted(d[0] if isinstance(d, tuple) else d[0][0] for d in diffs)
    assert kinds == sorted(expected)


async def test_store_and_tickets_work_on_the_migrated_schema(empty: Settings) -> None:
    await migrate.upgrade(empty)
    key = session_key("rest", "default", dm_peer="u1")
    alice = Participant(id="u1", name="Alice")
    store = await open_store(empty)
    try:
        msg = InboundMessage(
            event_id="e1",
            channel="rest",
            account="default",
            session_key=key,
            sender=alice,
            text="héllo",
        )
        assert (await store.append_inbound(msg)) is not None
        assert await store.append_inbound(msg) is None  # the dedupe index exists
        cite = Citation(doc_id="d1", title="Doc", url="https://example.com/d1", score=0.5)
        (answer,) = await store.append(
            [NewMessage(key, Role.BOT, "answer", kind="answer", event_id="r1", citations=(cite,))]
        )
        (again,) = await store.append([NewMessage(key, Role.BOT, "answer", event_id="r1")])
        assert (answer.seq, again.seq, again.fresh) == (2, 2, False)
        assert await store.unhandled() == [msg]
        await store.mark_handled(key, ["e1"])
        assert await store.unhandled() == []
        stored = await store.messages(key)
        assert [(m.seq, m.text, m.citations) for m in stored] == [
            (1, "héllo", ()),
            (2, "answer", (cite,)),
        ]
        conv = await store.set_mode(key, SessionMode.QUEUED, reason="customer_request")
        assert conv.mode is SessionMode.QUEUED
        assert conv.queued_at is not None
        await store.set_meta(key, "teams", {"ref": [1, 2]})
        conv2 = await store.conversation(key)
        assert conv2 is not None
        assert conv2.meta == {"teams": {"ref": [1, 2]}}
        await store.create_agent(AgentAccount("ann", "Ann", "$argon2id$x"))
        assert await store.agent("ann") == AgentAccount("ann", "Ann", "$argon2id$x")
        await store.audit("agent:ann", "handoff.claim", key, {"n": 1})
        tickets = LocalTicketBackend.for_store(store)
        ticket = await tickets.create(
            subject="Help", description="t", requester=alice, channel="rest", session_key=key
        )
        assert ticket.id == "T-000001"
        commented = await tickets.comment(ticket.id, "ann", "on it")
        assert [c[:2] for c in commented.comments] == [("ann", "on it")]
    finally:
        await store.close()
    assert await migrate.drift(empty) == []  # opening the store created nothing new


async def test_database_created_by_the_store_is_adopted(empty: Settings) -> None:
    store = await open_store(empty)  # create_all, as before migrations existed
    try:
        await LocalTicketBackend.for_store(store).open()
        async with store.engine.begin() as conn:  # as a Zendesk/Jira backend on first use
            await conn.run_sync(ticket_link_metadata.create_all)
        await DeskStore(store).open()
        await store.create_agent(AgentAccount("ann", "Ann", "h"))
    finally:
        await store.close()
    assert await migrate.current(empty) is None
    assert await migrate.drift(empty) == []
    assert await migrate.upgrade(empty) == migrate.head_revision()  # stamped, not recreated
    store = await open_store(empty)
    try:
        assert await store.agent("ann") is not None
    finally:
        await store.close()


async def test_accounts_made_before_roles_existed_are_agents(empty: Settings) -> None:
    """A 0002 database (agents but no agent_profiles) upgrades; its accounts are ``agent``."""
    assert await migrate.upgrade(empty, "0002") == "0002"
    await _execute(
        empty,
        "insert into agents (name, display_name, password_hash, active, created_at)"
        " values ('old', 'Old', 'h', true, '2026-01-01T00:00:00.000000')",
    )
    assert await migrate.upgrade(empty) == migrate.head_revision()
    store = await open_store(empty)
    try:
        old = await store.agent("old")
        assert old is not None
        assert old.role is AgentRole.AGENT
        await store.update_agent(replace(old, role=AgentRole.ADMIN))
        again = await store.agent("old")
        assert again is not None
        assert again.role is AgentRole.ADMIN
    finally:
        await store.close()


async def test_concurrent_upgrades_on_postgresql(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=postgres_server.create_database())
    results = await asyncio.gather(*(migrate.upgrade(settings) for _ in range(3)))
    assert results == [migrate.head_revision()] * 3
    assert await migrate.drift(settings) == []


def extra_tables() -> sa.MetaData:
    """A plugin's tables, registered as a callable (the entry point's other form)."""
    tables = sa.MetaData()
    sa.Table("extra", tables, sa.Column("id", sa.Integer, primary_key=True))
    return tables


def _register(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    eps = [EntryPoint(name, value, migrate.TABLES_GROUP) for name, value in values.items()]
    monkeypatch.setattr(
        migrate, "entry_points", lambda group: [ep for ep in eps if ep.group == group]
    )


def test_plugin_tables_come_from_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(
        monkeypatch,
        extra="tests.store.test_migrations:extra_tables",
        tickets="plugins.ticketing.local:metadata",
    )
    found = migrate.plugin_metadata()
    assert [sorted(tables.tables) for tables in found] == [
        ["extra"],
        ["ticket_comments", "tickets"],
    ]


@pytest.mark.parametrize(
    "value",
    [
        "tests.store.test_migrations:TABLES",  # a set of names, not a MetaData
        "tests.store.no_such_module:metadata",
        "tests.store.test_migrations:no_such_name",
    ],
)
def test_a_broken_table_entry_point_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    _register(monkeypatch, broken=value)
    with pytest.raises(ConfigError, match="table entry point 'broken'"):
        migrate.plugin_metadata()
