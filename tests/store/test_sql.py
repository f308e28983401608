"""SqlStore: group commit, dedupe, seqs, idempotency, modes, recovery, agents, audit."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.envelope import Citation, InboundMessage, Participant, SessionKey, session_key
from bot.errors import BackendUnavailable, Conflict, NotFound, PayloadInvalid
from bot.store import batcher, open_store
from bot.store.base import AgentAccount, AgentRole, NewMessage, Role, SessionMode, Store
from bot.store.sql import SqlStore
from tests.store.databases import count


def _key(peer: str = "u1") -> SessionKey:
    return session_key("rest", "default", dm_peer=peer)


def _msg(event_id: str, peer: str = "u1", text: str = "hello") -> InboundMessage:
    return InboundMessage(
        event_id=event_id,
        channel="rest",
        account="default",
        session_key=_key(peer),
        sender=Participant(id=peer, name=f"User {peer}"),
        text=text,
        raw={"payload": event_id},
    )


class TestInbound:
    async def test_stores_message_and_conversation(self, store: SqlStore) -> None:
        stored = await store.append_inbound(_msg("e1"))
        assert stored is not None
        assert (stored.seq, stored.role, stored.text) == (1, Role.CUSTOMER, "hello")
        assert stored.created_at.tzinfo is UTC
        conv = await store.conversation(_key())
        assert conv is not None
        assert (conv.channel, conv.account, conv.mode, conv.last_seq) == (
            "rest",
            "default",
            SessionMode.BOT,
            1,
        )
        assert conv.customer == Participant(id="u1", name="User u1")
        assert conv.created_at.tzinfo is UTC

    async def test_duplicate_event_returns_none_and_writes_once(
        self, store: SqlStore, settings: Settings
    ) -> None:
        assert await store.append_inbound(_msg("e1")) is not None
        assert await store.append_inbound(_msg("e1", text="retried")) is None
        assert [m.text for m in await store.messages(_key())] == ["hello"]
        assert await count(settings, "messages") == 1

    async def test_duplicates_inside_one_batch(self, store: SqlStore, settings: Settings) -> None:
        results = await asyncio.gather(*(store.append_inbound(_msg("same")) for _ in range(5)))
        assert sum(r is not None for r in results) == 1
        assert await count(settings, "messages") == 1

    async def test_duplicate_after_restart_is_found_in_the_database(
        self, settings: Settings
    ) -> None:
        first = await open_store(settings)
        await first.append_inbound(_msg("e1"))
        await first.close()
        second = await open_store(settings)  # empty in-memory dedupe cache
        try:
            # The duplicate shares a batch with new messages; only it is refused.
            dup, new, reply = await asyncio.gather(
                second.append_inbound(_msg("e1")),
                second.append_inbound(_msg("e2")),
                second.append([NewMessage(_key(), Role.BOT, "answer", event_id="r2")]),
            )
            assert dup is None
            assert new is not None
            assert new.seq == 2  # the seq counter reloads max(seq) from the database
            assert reply[0].seq == 3
            assert [m.text for m in await second.messages(_key())] == ["hello", "hello", "answer"]
        finally:
            await second.close()

    async def test_same_event_id_on_another_account_is_not_a_duplicate(
        self, store: SqlStore
    ) -> None:
        other = _msg("e1").model_copy(
            update={"account": "other", "session_key": session_key("rest", "other", dm_peer="u1")}
        )
        assert await store.append_inbound(_msg("e1")) is not None
        assert await store.append_inbound(other) is not None

    async def test_customer_refreshes_on_later_messages(self, store: SqlStore) -> None:
        await store.append_inbound(_msg("e1"))
        renamed = _msg("e2").model_copy(
            update={"sender": Participant(id="u1", name="Renamed", email="r@example.com")}
        )
        await store.append_inbound(renamed)
        conv = await store.conversation(_key())
        assert conv is not None
        assert conv.customer.name == "Renamed"
        assert conv.last_seq == 2


class TestSeq:
    async def test_fifty_concurrent_writers_on_one_session(self, store: SqlStore) -> None:
        async def writer(w: int) -> list[int]:
            seqs = []
            for i in range(4):
                if i % 2:
                    [m] = await store.append([NewMessage(_key(), Role.BOT, f"{w}-{i}")])
                    seqs.append(m.seq)
                else:
                    stored = await store.append_inbound(_msg(f"{w}-{i}", text=f"{w}-{i}"))
                    assert stored is not None
                    seqs.append(stored.seq)
            return seqs

        per_writer = await asyncio.gather(*(writer(w) for w in range(50)))
        for seqs in per_writer:
            assert seqs == sorted(seqs)  # each writer's own order is kept
        stored = await store.messages(_key(), limit=1000)
        assert [m.seq for m in stored] == list(range(1, 201))
        by_text = {m.text: m.seq for m in stored}
        assert all(by_text[f"{w}-{i}"] == per_writer[w][i] for w in range(50) for i in range(4))
        conv = await store.conversation(_key())
        assert conv is not None
        assert conv.last_seq == 200

    async def test_sessions_count_independently(self, store: SqlStore) -> None:
        a = await store.append_inbound(_msg("a1", peer="a"))
        b = await store.append_inbound(_msg("b1", peer="b"))
        [a2, a3] = await store.append(
            [NewMessage(_key("a"), Role.BOT, "x"), NewMessage(_key("a"), Role.SYSTEM, "y")]
        )
        assert a is not None
        assert b is not None
        assert (a.seq, b.seq, a2.seq, a3.seq) == (1, 1, 2, 3)

    async def test_messages_after_limit_and_internal(self, store: SqlStore) -> None:
        inbound = await store.append_inbound(_msg("e1"))
        written = await store.append(
            [
                NewMessage(
                    _key(),
                    Role.BOT,
                    "answer",
                    kind="answer",
                    reply_to="e1",
                    citations=(Citation(doc_id="d1", title="Slack", url="https://x", score=0.5),),
                ),
                NewMessage(_key(), Role.AGENT, "psst", kind="note", author="ann", internal=True),
                NewMessage(_key(), Role.AGENT, "hi", kind="agent", author="ann"),
            ]
        )
        visible = await store.messages(_key())
        assert [m.seq for m in visible] == [1, 2, 4]
        assert visible[1].citations == (
            Citation(doc_id="d1", title="Slack", url="https://x", score=0.5),
        )
        assert visible[1].reply_to == "e1"
        everything = await store.messages(_key(), include_internal=True)
        assert everything == [inbound, *written]  # read back exactly as written
        assert everything[2].internal
        assert everything[2].author == "ann"
        assert [m.seq for m in await store.messages(_key(), after_seq=1, limit=1)] == [2]


class TestIdempotency:
    async def test_repeated_key_returns_stored_row(
        self, store: SqlStore, settings: Settings
    ) -> None:
        await store.append_inbound(_msg("e1"))
        [first] = await store.append([NewMessage(_key(), Role.BOT, "one", event_id="reply:e1")])
        [again] = await store.append([NewMessage(_key(), Role.BOT, "two", event_id="reply:e1")])
        assert first.fresh
        assert not again.fresh
        assert (again.seq, again.text) == (first.seq, "one")
        assert await count(settings, "messages") == 2

    async def test_same_key_twice_in_one_batch(self, store: SqlStore) -> None:
        results = await asyncio.gather(
            *(
                store.append([NewMessage(_key(), Role.BOT, f"t{i}", event_id="k")])
                for i in range(4)
            )
        )
        assert sum(r[0].fresh for r in results) == 1
        assert len({r[0].seq for r in results}) == 1
        assert len(await store.messages(_key())) == 1

    async def test_same_key_in_another_session_is_written(self, store: SqlStore) -> None:
        [a] = await store.append([NewMessage(_key("a"), Role.BOT, "x", event_id="k")])
        [b] = await store.append([NewMessage(_key("b"), Role.BOT, "x", event_id="k")])
        assert a.fresh
        assert b.fresh


class TestModes:
    async def test_compare_and_set(self, store: SqlStore) -> None:
        await store.append_inbound(_msg("e1"))
        queued = await store.set_mode(
            _key(),
            SessionMode.QUEUED,
            expect=[SessionMode.BOT],
            reason="customer_request",
            ticket_id="T-000001",
        )
        assert queued.mode is SessionMode.QUEUED
        assert queued.escalation_reason == "customer_request"
        assert queued.ticket_id == "T-000001"
        assert queued.queued_at is not None
        assert queued.queued_at.tzinfo is UTC
        assert await store.conversation(_key()) == queued  # raw SQLite read == SQLAlchemy read
        with pytest.raises(Conflict):
            await store.set_mode(_key(), SessionMode.QUEUED, expect=[SessionMode.BOT])
        human = await store.set_mode(
            _key(), SessionMode.HUMAN, expect=[SessionMode.QUEUED], agent="ann"
        )
        assert (human.mode, human.assigned_agent) == (SessionMode.HUMAN, "ann")
        assert human.queued_at == queued.queued_at
        back = await store.set_mode(_key(), SessionMode.BOT, expect=[SessionMode.HUMAN])
        assert (back.mode, back.assigned_agent, back.queued_at) == (SessionMode.BOT, None, None)
        assert back.ticket_id == "T-000001"
        stored = await store.conversation(_key())
        assert stored == back

    async def test_unknown_session_is_not_found(self, store: SqlStore) -> None:
        with pytest.raises(NotFound):
            await store.set_mode(_key("nobody"), SessionMode.QUEUED, expect=[SessionMode.BOT])
        with pytest.raises(NotFound):
            await store.set_mode(_key("nobody"), SessionMode.CLOSED)

    async def test_concurrent_claims_only_one_wins(self, store: SqlStore) -> None:
        await store.append_inbound(_msg("e1"))
        await store.set_mode(_key(), SessionMode.QUEUED)
        results = await asyncio.gather(
            *(
                store.set_mode(
                    _key(), SessionMode.HUMAN, expect=[SessionMode.QUEUED], agent=f"agent{i}"
                )
                for i in range(5)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1
        assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
        conv = await store.conversation(_key())
        assert conv is not None
        assert conv.assigned_agent == winners[0].assigned_agent

    async def test_conversations_filter_and_order(self, store: SqlStore) -> None:
        for peer in ("a", "b", "c"):
            await store.append_inbound(_msg(f"{peer}1", peer=peer))
        await store.set_mode(_key("a"), SessionMode.QUEUED)
        await store.set_mode(_key("c"), SessionMode.HUMAN, agent="ann")
        await store.append_inbound(_msg("b2", peer="b"))  # b is now the most recent
        assert [c.session_key for c in await store.conversations()] == [
            _key("b"),
            _key("c"),
            _key("a"),
        ]
        active = await store.conversations(modes=[SessionMode.QUEUED, SessionMode.HUMAN])
        assert [c.session_key for c in active] == [_key("c"), _key("a")]
        assert [c.session_key for c in await store.conversations(limit=1)] == [_key("b")]
        assert await store.conversations(modes=[SessionMode.CLOSED]) == []

    async def test_set_meta(self, store: SqlStore) -> None:
        await store.append_inbound(_msg("e1"))
        await store.set_meta(_key(), "ref", {"service_url": "https://smba.example"})
        await store.set_meta(_key(), "n", 2)
        conv = await store.conversation(_key())
        assert conv is not None
        assert conv.meta == {"ref": {"service_url": "https://smba.example"}, "n": 2}
        with pytest.raises(NotFound):
            await store.set_meta(_key("nobody"), "x", 1)


class TestRecovery:
    async def test_unhandled_survive_a_crash(self, settings: Settings) -> None:
        first = await open_store(settings)
        sent = [_msg(f"a{i}", peer="a", text=f"a{i}") for i in range(3)]
        for msg in sent:
            await first.append_inbound(msg)
        await first.append_inbound(_msg("b0", peer="b"))
        await first.mark_handled(_key("a"), ["a0"])
        # A crash: the process dies without closing; only committed data is on disk.
        assert first._writer is not None
        first._writer.cancel()
        second = await open_store(settings)
        try:
            recovered = await second.unhandled()
            assert [(m.session_key, m.event_id) for m in recovered] == [
                (_key("a"), "a1"),
                (_key("a"), "a2"),
                (_key("b"), "b0"),
            ]
            assert recovered[:2] == sent[1:]  # the whole envelope comes back
            await second.mark_handled(_key("a"), ["a1", "a2"])
            await second.mark_handled(_key("b"), ["b0"])
            assert await second.unhandled() == []
        finally:
            await second.close()
            await first.close()

    async def test_mark_handled_ignores_outbound_rows(self, store: SqlStore) -> None:
        await store.append_inbound(_msg("e1"))
        await store.append([NewMessage(_key(), Role.BOT, "x", event_id="e1-reply")])
        await store.mark_handled(_key(), ["e1-reply"])
        assert [m.event_id for m in await store.unhandled()] == ["e1"]

    async def test_close_flushes_queued_writes(self, settings: Settings) -> None:
        s = await open_store(settings)
        writes = [asyncio.create_task(s.append_inbound(_msg(f"e{i}"))) for i in range(20)]
        await asyncio.sleep(0)
        await s.close()
        assert all(w.done() and w.result() is not None for w in writes)
        assert await count(settings, "messages") == 20
        with pytest.raises(BackendUnavailable):
            await s.append_inbound(_msg("late"))


class TestBatchFailure:
    async def test_a_bad_request_fails_alone(
        self, store: SqlStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        good = [store.append_inbound(_msg(f"g{i}", text=f"g{i}")) for i in range(10)]
        bad = store.append_inbound(_msg("bad", text="lone surrogate \ud800"))
        results = await asyncio.gather(*good[:5], bad, *good[5:], return_exceptions=True)
        assert isinstance(results[5], PayloadInvalid)
        assert "store.batch_failed" in caplog.messages  # it shared a batch with the good ones
        ok = results[:5] + results[6:]
        assert all(r is not None and not isinstance(r, BaseException) for r in ok)
        stored = await store.messages(_key())
        assert sorted(m.text for m in stored) == sorted(f"g{i}" for i in range(10))
        assert [m.seq for m in stored] == list(range(1, 11))  # no gap from the failed one
        # The writer is alive and the failed event can be sent again once fixed.
        assert await store.append_inbound(_msg("bad", text="fixed")) is not None


class TestAgentsAndAudit:
    async def test_agent_accounts(self, store: SqlStore) -> None:
        account = AgentAccount("ann", "Ann A.", "$argon2id$v=19$m=65536,t=3,p=4$x$y")
        await store.create_agent(account)
        assert await store.agent("ann") == account
        assert await store.agent("bob") is None
        with pytest.raises(Conflict):
            await store.create_agent(AgentAccount("ann", "Other", "h"))
        updated = AgentAccount("ann", "Ann B.", "new-hash", active=False)
        await store.update_agent(updated)
        assert await store.agent("ann") == updated
        with pytest.raises(NotFound):
            await store.update_agent(AgentAccount("bob", "Bob", "h"))

    async def test_agent_roles(self, store: SqlStore) -> None:
        await store.create_agent(AgentAccount("zed", "Zed", "h", role=AgentRole.VIEWER))
        await store.create_agent(AgentAccount("amy", "Amy", "h", role=AgentRole.ADMIN))
        await store.create_agent(AgentAccount("kim", "Kim", "h"))
        assert [(a.name, a.role) for a in await store.list_agents()] == [
            ("amy", AgentRole.ADMIN),
            ("kim", AgentRole.AGENT),
            ("zed", AgentRole.VIEWER),
        ]
        await store.update_agent(AgentAccount("zed", "Zed", "h", role=AgentRole.AGENT))
        zed = await store.agent("zed")
        assert zed is not None
        assert zed.role is AgentRole.AGENT

    async def test_audit_rows(self, store: SqlStore, settings: Settings) -> None:
        before = datetime.now(UTC)
        await asyncio.gather(
            store.audit("ann", "claim", _key(), {"from": "queue"}),
            store.audit("system", "agent.create", None, {"display_name": "Ann"}),
        )
        records = await store.audit_records()
        assert {(r.actor, r.action, r.session_key) for r in records} == {
            ("ann", "claim", _key()),
            ("system", "agent.create", None),
        }
        assert all(r.at >= before and r.at.tzinfo is UTC for r in records)
        mine = await store.audit_records(session_key=_key())
        assert [r.detail for r in mine] == [{"from": "queue"}]
        assert await count(settings, "audit") == 2


class TestSqliteAndBatching:
    async def test_wal_mode_and_file_location(self, tmp_path: Path) -> None:
        s = await open_store(Settings(data_dir=tmp_path / "data"))
        await s.close()
        with sqlite3.connect(tmp_path / "data" / "switchboard.db") as conn:
            assert conn.execute("pragma journal_mode").fetchall() == [("wal",)]

    async def test_writes_are_group_committed(self, settings: Settings) -> None:
        settings = settings.model_copy(update={"store_batch_ms": 20.0})
        s = await open_store(settings)
        transactions = 0
        real = s._transaction

        def counting(*args: Any) -> Any:
            nonlocal transactions
            transactions += 1
            return real(*args)

        s._transaction = counting  # type: ignore[assignment,method-assign]
        try:
            await s.append_inbound(_msg("warm"))
            await asyncio.gather(*(s.append_inbound(_msg(f"e{i}")) for i in range(100)))
        finally:
            await s.close()
        assert transactions <= 4  # one for "warm", then few for the 100 concurrent ones
        assert await count(settings, "messages") == 101

    async def test_checkpoints_run_off_the_writer(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(batcher, "CHECKPOINT_INTERVAL_S", 0.0)
        db = tmp_path / "data" / "switchboard.db"
        s = await open_store(Settings(data_dir=tmp_path / "data"))
        try:
            size = db.stat().st_size
            for i in range(20):  # the writer never checkpoints itself (wal_autocheckpoint=0)
                await asyncio.gather(*(s.append_inbound(_msg(f"e{i}-{j}")) for j in range(50)))
            assert s._checkpoint_task is not None
            await s._checkpoint_task
            assert db.stat().st_size > size  # pages reached the main file while open
        finally:
            await s.close()

    async def test_waits_for_another_writer_without_blocking_the_loop(
        self, tmp_path: Path
    ) -> None:
        s = await open_store(Settings(data_dir=tmp_path / "data"))
        other = sqlite3.connect(tmp_path / "data" / "switchboard.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # holds the write lock, as a ticket write does
            write = asyncio.create_task(s.append_inbound(_msg("e1")))
            ticks = 0
            for _ in range(20):
                await asyncio.sleep(0.005)
                ticks += 1
            assert ticks == 20  # the loop kept running while the store waited
            assert not write.done()
            other.execute("COMMIT")
            stored = await asyncio.wait_for(write, 2)
            assert stored is not None
            assert stored.seq == 1
        finally:
            other.close()
            await s.close()


def test_implements_the_store_protocol(tmp_path: Path) -> None:
    store: Store = SqlStore(Settings(data_dir=tmp_path))  # checked by mypy --strict
    assert isinstance(store, SqlStore)
