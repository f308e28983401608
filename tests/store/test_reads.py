"""Reads the router depends on: the latest history and a conversation row that is never stale."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from bot.config import Settings
from bot.envelope import InboundMessage, Participant, SessionKey, session_key
from bot.errors import BackendUnavailable
from bot.store import open_store
from bot.store.base import NewMessage, Role, SessionMode
from bot.store.sql import SqlStore

KEY: SessionKey = session_key("rest", "default", chat="c1")


def _msg(i: int, name: str = "Ann") -> InboundMessage:
    return InboundMessage(
        event_id=f"e{i}",
        channel="rest",
        account="default",
        session_key=KEY,
        sender=Participant(id="u1", name=name),
        text=f"message {i}",
    )


async def test_recent_returns_the_newest_messages_oldest_first(store: SqlStore) -> None:
    for i in range(10):
        await store.append_inbound(_msg(i))
    await store.append(
        [NewMessage(session_key=KEY, role=Role.AGENT, text="note", kind="note", internal=True)]
    )
    recent = await store.recent(KEY, 3)
    assert [m.text for m in recent] == ["message 7", "message 8", "message 9"]


async def test_conversation_reflects_every_write_at_once(store: SqlStore) -> None:
    await store.append_inbound(_msg(1))
    first = await store.conversation(KEY)
    assert first is not None
    assert first.mode == SessionMode.BOT
    assert first.last_seq == 1

    await store.append_inbound(_msg(2, name="Ann Lee"))
    second = await store.conversation(KEY)
    assert second is not None
    assert second.last_seq == 2
    assert second.customer.name == "Ann Lee"

    # A mode change is visible to a reader that runs while the change commits.
    seen: list[SessionMode] = []

    async def reader() -> None:
        for _ in range(20):
            conv = await store.conversation(KEY)
            assert conv is not None
            seen.append(conv.mode)
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    changed = await store.set_mode(KEY, SessionMode.QUEUED, reason="customer_request")
    after = await store.conversation(KEY)
    await task
    assert changed.mode == SessionMode.QUEUED
    assert after is not None
    assert after.mode == SessionMode.QUEUED
    assert after.escalation_reason == "customer_request"
    # Once the queued mode was seen, no reader saw the old mode again.
    first_queued = seen.index(SessionMode.QUEUED) if SessionMode.QUEUED in seen else len(seen)
    assert all(m == SessionMode.QUEUED for m in seen[first_queued:])

    await store.set_meta(KEY, "teams_ref", {"id": "x"})
    meta = await store.conversation(KEY)
    assert meta is not None
    assert meta.meta == {"teams_ref": {"id": "x"}}


async def test_concurrent_conversation_lookups_each_get_their_own_row(store: SqlStore) -> None:
    """Hundreds of turns ask for their session's mode at once (PostgreSQL coalesces them)."""
    keys = [session_key("rest", "default", chat=f"c{i}") for i in range(300)]
    for i, key in enumerate(keys[:200]):  # the last 100 never wrote
        msg = _msg(i).model_copy(update={"session_key": key, "event_id": f"k{i}"})
        assert await store.append_inbound(msg) is not None
    await store.set_mode(keys[7], SessionMode.HUMAN, reason="agent_claim")

    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM conversations" in statement:
            statements.append(statement)

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        lookups = keys + keys[:50]  # some sessions asked for twice in the same instant
        convs = await asyncio.gather(*(store.conversation(k) for k in lookups))
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", seen)

    for key, conv in zip(lookups, convs, strict=True):
        if key in keys[200:]:
            assert conv is None
        else:
            assert conv is not None
            assert conv.session_key == key
            assert conv.last_seq == 1
    assert convs[7] is not None
    assert convs[7].mode == SessionMode.HUMAN
    assert convs[8] is not None
    assert convs[8].mode == SessionMode.BOT
    if store.engine.dialect.name == "postgresql":
        # One query per coalesced batch, not one per lookup.
        assert 1 <= len(statements) <= 5


async def test_conversation_lookups_fail_cleanly_when_the_store_is_closed(
    settings: Settings,
) -> None:
    store = await open_store(settings)
    await store.append_inbound(_msg(1))
    await store.close()
    with pytest.raises(BackendUnavailable):
        await store.conversation(KEY)
