"""The store's outbox on SQLite and PostgreSQL: FIFO heads, leases, reschedules, migrations."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.config import Settings
from bot.envelope import OutboundKind, OutboundMessage, SessionKey, session_key, utcnow
from bot.store import migrate, open_store
from bot.store.engine import make_engine
from bot.store.sql import SqlStore
from tests.fakes.postgres import PostgresServer

S1 = session_key("slack", "T1", chat="C1")
S2 = session_key("telegram", "bot1", dm_peer="42")
S3 = session_key("rest", "default", dm_peer="u3")


def _out(key: SessionKey, text: str) -> OutboundMessage:
    return OutboundMessage(
        session_key=key, text=text, kind=OutboundKind.ANSWER, idempotency_key=f"answer:{text}"
    )


async def test_claim_takes_the_oldest_due_entry_of_each_session(store: SqlStore) -> None:
    now = utcnow()
    a1 = await store.outbox_put(_out(S1, "a1"), error="ChannelUnavailable()", next_attempt_at=now)
    await store.outbox_put(_out(S1, "a2"), error=None, next_attempt_at=now)
    b1 = await store.outbox_put(_out(S2, "b1"), error="RateLimited()", next_attempt_at=now)
    assert (a1.channel, b1.channel) == ("slack", "telegram")
    assert await store.outbox_pending(S1)
    assert not await store.outbox_pending(S3)
    status = await store.outbox_status()
    assert status.depth == 3
    assert status.next_attempt_at is not None

    claimed = await store.outbox_claim(limit=10, lease_s=60)
    assert [e.message.text for e in claimed] == ["a1", "b1"]  # a2 waits behind a1
    assert claimed[0].message == _out(S1, "a1")  # the envelope round-trips exactly
    assert claimed[0].last_error == "ChannelUnavailable()"
    assert claimed[0].claim is not None
    assert await store.outbox_claim(limit=10, lease_s=60) == []  # leased, and a2 is no head

    assert await store.outbox_done(claimed[0])
    assert not await store.outbox_done(claimed[0])  # gone already
    (next_one,) = await store.outbox_claim(limit=10, lease_s=60)
    assert next_one.message.text == "a2"
    assert next_one.last_error is None
    assert [e.message.text for e in await store.outbox()] == ["a2", "b1"]
    assert [e.message.text for e in await store.outbox(S2)] == ["b1"]


async def test_reschedule_counts_the_attempt_and_waits(store: SqlStore) -> None:
    now = utcnow()
    await store.outbox_put(_out(S1, "a1"), error="e0", next_attempt_at=now)
    (entry,) = await store.outbox_claim(limit=1, lease_s=60)
    later = now + timedelta(hours=1)
    assert await store.outbox_reschedule(
        entry, error="ChannelUnavailable('down')", next_attempt_at=later
    )
    assert await store.outbox_claim(limit=10, lease_s=60) == []  # not due for an hour
    (stored,) = await store.outbox(S1)
    assert (stored.attempts, stored.last_error, stored.claim) == (
        1,
        "ChannelUnavailable('down')",
        None,
    )
    assert abs((stored.next_attempt_at - later).total_seconds()) < 0.001
    assert (await store.outbox_status()).next_attempt_at == stored.next_attempt_at
    # A later message of the session queues behind it and makes it due now.
    await store.outbox_put(_out(S1, "a2"), error=None, next_attempt_at=utcnow())
    (again,) = await store.outbox_claim(limit=10, lease_s=60)
    assert (again.message.text, again.attempts) == ("a1", 1)


async def test_a_lost_lease_cannot_finish_the_entry(store: SqlStore) -> None:
    await store.outbox_put(_out(S1, "a1"), error="e", next_attempt_at=utcnow())
    (first,) = await store.outbox_claim(limit=1, lease_s=0.0)  # lease over at once
    (second,) = await store.outbox_claim(limit=1, lease_s=60)  # another claimer takes it
    assert first.id == second.id
    assert first.claim != second.claim
    assert not await store.outbox_reschedule(first, error="late", next_attempt_at=utcnow())
    assert not await store.outbox_done(first)
    assert await store.outbox_done(second)
    assert (await store.outbox_status()).depth == 0


async def test_pending_lookups_at_once(store: SqlStore) -> None:
    await store.outbox_put(_out(S2, "b1"), error="e", next_attempt_at=utcnow())
    keys = [S1, S2, S3] * 20
    found = await asyncio.gather(*(store.outbox_pending(k) for k in keys))
    assert found == [k == S2 for k in keys]


async def test_two_stores_never_claim_one_entry(settings: Settings) -> None:
    """Two processes' stores on one database claim concurrently: each entry goes to one."""
    first, second = await open_store(settings), await open_store(settings)
    try:
        now = utcnow()
        keys = [session_key("rest", "default", dm_peer=f"u{i}") for i in range(20)]
        for n in range(3):
            for key in keys:
                await first.outbox_put(_out(key, f"{key}#{n}"), error="e", next_attempt_at=now)
        claims: dict[int, int] = {}
        order: list[str] = []

        async def worker(store: SqlStore) -> None:
            while entries := await store.outbox_claim(limit=4, lease_s=60):
                for e in entries:
                    claims[e.id] = claims.get(e.id, 0) + 1
                    order.append(e.message.text)
                await asyncio.sleep(0)
                for e in entries:
                    assert await store.outbox_done(e)

        await asyncio.gather(worker(first), worker(second), worker(first), worker(second))
        assert len(claims) == 60
        assert set(claims.values()) == {1}
        for key in keys:  # FIFO per session, whoever claimed
            assert [t for t in order if t.startswith(f"{key}#")] == [
                f"{key}#{n}" for n in range(3)
            ]
        assert (await first.outbox_status()).depth == 0
    finally:
        await first.close()
        await second.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on a new, empty database."""
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return Settings(data_dir=tmp_path / "data", database_url=server.create_database())


async def _has_outbox(settings: Settings) -> bool:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as conn:
            return bool(await conn.run_sync(lambda c: sa.inspect(c).has_table("outbox")))
    finally:
        await engine.dispose()


async def test_upgrade_takes_a_0001_database_to_the_outbox(empty: Settings) -> None:
    assert await migrate.upgrade(empty, "0001") == "0001"
    assert not await _has_outbox(empty)
    assert await migrate.upgrade(empty) == migrate.head_revision()
    assert await _has_outbox(empty)
    assert await migrate.drift(empty) == []
    store = await open_store(empty)
    try:
        await store.outbox_put(_out(S1, "a1"), error="e", next_attempt_at=utcnow())
        assert [e.message.text for e in await store.outbox_claim(limit=5, lease_s=5)] == ["a1"]
    finally:
        await store.close()


async def test_upgrade_after_the_new_store_opened_a_0001_database(empty: Settings) -> None:
    """A new process opened the database (creating the outbox) before ``db upgrade`` ran."""
    await migrate.upgrade(empty, "0001")
    store = await open_store(empty)
    await store.close()
    assert await _has_outbox(empty)
    assert await migrate.upgrade(empty) == migrate.head_revision()
    assert await migrate.drift(empty) == []
