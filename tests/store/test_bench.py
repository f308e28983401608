"""The benchmark's load, small: everything concurrent callers wrote is stored, in order."""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings
from bot.envelope import session_key
from bot.store import open_store
from tests.store import bench_store


async def test_concurrent_load_is_stored_completely(tmp_path: Path) -> None:
    store = await open_store(Settings(data_dir=tmp_path))
    try:
        result = await bench_store.run(store, messages=600, callers=50, sessions=7)
        assert result.messages == 600
        assert len(result.latencies_s) == 1800
        assert await store.unhandled() == []  # every message was marked handled
        total = 0
        for j in range(7):
            key = session_key("rest", "bench", dm_peer=f"u{j}")
            stored = await store.messages(key, limit=1000)
            total += len(stored)
            assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
            replies = {m.reply_to: m.seq for m in stored if m.kind == "answer"}
            questions = {m.event_id: m.seq for m in stored if m.kind == "message"}
            assert replies.keys() == questions.keys()
            assert all(
                replies[e] > questions[e] for e in questions
            )  # an answer follows its question
            conv = await store.conversation(key)
            assert conv is not None
            assert conv.last_seq == len(stored)
        assert total == 1200
    finally:
        await store.close()
