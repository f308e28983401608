"""LocalTicketBackend: ids, validation, ownership listing, comments, status, shared database."""

from __future__ import annotations

import asyncio
from datetime import UTC
from pathlib import Path

import pytest

from bot.config import Settings
from bot.envelope import InboundMessage, Participant, SessionKey, session_key
from bot.errors import ConfigError, NotFound, PayloadInvalid
from bot.store.sql import SqlStore
from bot.tools import TicketBackend
from plugins.ticketing.local import LocalTicketBackend, format_ticket_id, parse_ticket_id
from tests.store.databases import count

ALICE = Participant(id="U-alice", name="Alice", email="alice@example.com", verified=True)
BOB = Participant(id="U-bob", name="Bob")
KEY = SessionKey("slack:T1:dm:U-alice")


@pytest.fixture
def tickets(store: SqlStore) -> LocalTicketBackend:
    return LocalTicketBackend.for_store(store)


async def _open(tickets: LocalTicketBackend, who: Participant = ALICE, **kw: str) -> str:
    ticket = await tickets.create(
        subject=kw.get("subject", "Cannot connect Slack"),
        description=kw.get("description", "customer: it fails\nbot: sorry"),
        requester=who,
        channel=kw.get("channel", "slack"),
        session_key=KEY,
        priority=kw.get("priority", "normal"),
    )
    return ticket.id


def test_ids() -> None:
    assert format_ticket_id(42) == "T-000042"
    assert format_ticket_id(1234567) == "T-1234567"
    assert parse_ticket_id("T-000042") == 42
    assert parse_ticket_id(" T-7 ") == 7
    for bad in ("42", "T-", "T-abc", "ZD-12", "T-1; drop table tickets"):
        assert parse_ticket_id(bad) is None


async def test_create_and_get(tickets: LocalTicketBackend) -> None:
    created = await tickets.create(
        subject="  Cannot   connect\nSlack ",
        description="transcript",
        requester=ALICE,
        channel="slack",
        session_key=KEY,
        priority="high",
    )
    assert created.id == "T-000001"
    assert (created.subject, created.status, created.priority) == (
        "Cannot connect Slack",
        "open",
        "high",
    )
    assert (created.requester_id, created.requester_channel, created.session_key) == (
        "U-alice",
        "slack",
        KEY,
    )
    assert created.created_at.tzinfo is UTC
    assert await tickets.get("T-000001") == created
    assert (await _open(tickets)) == "T-000002"


async def test_unknown_ids(tickets: LocalTicketBackend) -> None:
    assert await tickets.get("T-000099") is None
    assert await tickets.get("not-an-id") is None
    with pytest.raises(NotFound):
        await tickets.comment("T-000099", "ann", "hello")
    with pytest.raises(NotFound):
        await tickets.set_status("bogus", "solved")


async def test_validation(tickets: LocalTicketBackend) -> None:
    with pytest.raises(PayloadInvalid) as bad_priority:
        await _open(tickets, priority="asap")
    assert bad_priority.value.field == "priority"
    with pytest.raises(PayloadInvalid):
        await _open(tickets, subject="   ")
    ticket_id = await _open(tickets)
    with pytest.raises(PayloadInvalid) as bad_status:
        await tickets.set_status(ticket_id, "done")
    assert bad_status.value.field == "status"
    long = await tickets.get(await _open(tickets, subject="x" * 1000))
    assert long is not None
    assert len(long.subject) == 255


async def test_list_for_only_the_requesters_tickets_newest_first(
    tickets: LocalTicketBackend,
) -> None:
    first = await _open(tickets, subject="first")
    await _open(tickets, BOB, subject="bob's")
    await _open(tickets, subject="same id, other channel", channel="telegram")
    second = await _open(tickets, subject="second")
    mine = await tickets.list_for("U-alice", "slack")
    assert [t.id for t in mine] == [second, first]
    assert [t.subject for t in await tickets.list_for("U-bob", "slack")] == ["bob's"]
    assert [t.id for t in await tickets.list_for("U-alice", "slack", limit=1)] == [second]
    assert await tickets.list_for("U-nobody", "slack") == []


async def test_comments_and_status(tickets: LocalTicketBackend) -> None:
    ticket_id = await _open(tickets)
    await tickets.comment(ticket_id, "Alice", "any news?")
    updated = await tickets.comment(ticket_id, "agent:ann", "looking into it")
    assert [(a, t) for a, t, _ in updated.comments] == [
        ("Alice", "any news?"),
        ("agent:ann", "looking into it"),
    ]
    assert all(at.tzinfo is UTC for _, _, at in updated.comments)
    solved = await tickets.set_status(ticket_id, "solved")
    assert solved.status == "solved"
    assert solved.comments == updated.comments
    listed = await tickets.list_for("U-alice", "slack")
    assert listed[0].comments == updated.comments


async def test_concurrent_creates_get_distinct_ids(tickets: LocalTicketBackend) -> None:
    ids = await asyncio.gather(*(_open(tickets, subject=f"s{i}") for i in range(10)))
    assert sorted(ids) == [f"T-{n:06d}" for n in range(1, 11)]


async def test_shares_the_store_database_while_it_writes(
    store: SqlStore, tickets: LocalTicketBackend, settings: Settings
) -> None:
    def msg(i: int) -> InboundMessage:
        return InboundMessage(
            event_id=f"e{i}",
            channel="slack",
            account="T1",
            session_key=session_key("slack", "T1", dm_peer="U-alice"),
            sender=ALICE,
            text=f"m{i}",
        )

    writes = asyncio.gather(*(store.append_inbound(msg(i)) for i in range(50)))
    ticket_id = await _open(tickets)
    await writes
    assert await count(settings, "tickets") == 1
    assert await count(settings, "messages") == 50
    assert ticket_id == "T-000001"


async def test_own_engine_from_settings(tmp_path: Path) -> None:
    backend = LocalTicketBackend(Settings(data_dir=tmp_path / "own"))
    try:
        ticket_id = await _open(backend)
        assert (await backend.get(ticket_id)) is not None
    finally:
        await backend.close()
    assert (tmp_path / "own" / "switchboard.db").is_file()
    reopened = LocalTicketBackend(Settings(data_dir=tmp_path / "own"))
    try:
        assert (await reopened.get("T-000001")) is not None  # persisted
    finally:
        await reopened.close()


def test_for_store_needs_a_sql_store() -> None:
    with pytest.raises(ConfigError):
        LocalTicketBackend.for_store(object())  # type: ignore[arg-type]


def test_implements_the_ticket_backend_protocol(tmp_path: Path) -> None:
    backend: TicketBackend = LocalTicketBackend(Settings(data_dir=tmp_path))  # mypy --strict
    assert isinstance(backend, LocalTicketBackend)
