from __future__ import annotations

import itertools
import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.privacy.audit_chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainHead,
    Fault,
    append_entry,
    format_time,
    verify,
)

T0 = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)


def _chain(n: int = 5, key: bytes | None = None) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    actions = ["login", "claim", "reply", "resolve", "role_change", "export", "erase"]
    for i in range(n):
        entries.append(
            append_entry(
                entries[-1] if entries else None,
                actor="agent:alice",
                action=actions[i % len(actions)],
                target=f"webchat:conv-{i}",
                details={"n": i, "note": "ok"},
                at=T0 + timedelta(seconds=i),
                key=key,
            )
        )
    return entries


def test_an_untouched_chain_verifies() -> None:
    entries = _chain()
    assert entries[0].prev_hash == GENESIS_HASH
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    result = verify(entries)
    assert result.ok
    assert result.entries == 5
    assert result.head == entries[-1].head


def test_an_edited_entry_is_found() -> None:
    entries = _chain()
    entries[2] = replace(entries[2], details={"n": 2, "note": "changed"})
    result = verify(entries)
    assert [(p.seq, p.fault) for p in result.problems] == [(3, Fault.EDITED)]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    entries = _chain()
    forged = append_entry(
        entries[1], actor="agent:mallory", action="reply", target="webchat:conv-2", at=T0
    )
    entries[2] = forged
    result = verify(entries)
    assert [(p.seq, p.fault) for p in result.problems] == [(3, Fault.EDITED)]


def test_a_deleted_entry_is_found() -> None:
    entries = _chain()
    del entries[2]
    result = verify(entries)
    assert [(p.seq, p.fault) for p in result.problems] == [(4, Fault.DELETED)]


def test_deleting_the_first_or_last_entries() -> None:
    entries = _chain()
    assert [p.fault for p in verify(entries[1:]).problems] == [Fault.DELETED]
    head = entries[-1].head
    # A shorter chain is valid by itself: only the head kept elsewhere reveals the cut.
    assert verify(entries[:-2]).ok
    cut = verify(entries[:-2], expected_head=head)
    assert [(p.seq, p.fault) for p in cut.problems] == [(3, Fault.TRUNCATED)]
    assert verify(entries, expected_head=head).ok


def test_verifying_from_an_archived_head() -> None:
    entries = _chain()
    assert verify(entries[2:], after=entries[1].head).ok
    assert not verify(entries[2:], after=ChainHead(2, "f" * 64)).ok


def test_a_keyed_chain_needs_its_key() -> None:
    entries = _chain(key=b"k" * 32)
    assert verify(entries, key=b"k" * 32).ok
    assert not verify(entries).ok
    # Without the key a forger cannot produce a matching HMAC.
    forged = append_entry(entries[1], actor="x", action="y", target="z", at=T0)
    assert not verify([*entries[:2], forged], key=b"k" * 32).ok


def test_rows_from_sqlite_verify_and_an_update_is_detected() -> None:
    """The verifier runs over SQL rows: naive datetimes and JSON text details included."""
    db = sqlite3.connect(":memory:", detect_types=sqlite3.PARSE_DECLTYPES)
    db.row_factory = sqlite3.Row
    db.execute(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, actor TEXT, at TIMESTAMP, action TEXT,"
        " target TEXT, details TEXT, prev_hash TEXT, hash TEXT)"
    )
    sqlite3.register_adapter(datetime, lambda d: d.replace(tzinfo=None).isoformat(" "))
    for e in _chain(6):
        at = datetime.strptime(e.at, "%Y-%m-%dT%H:%M:%S.%fZ")
        db.execute(
            "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (e.seq, e.actor, at, e.action, e.target, json.dumps(e.details), e.prev_hash, e.hash),
        )

    def rows() -> list[dict[str, Any]]:
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY seq")]

    assert isinstance(rows()[0]["at"], datetime)
    assert verify(rows()).ok
    db.execute("UPDATE audit SET target = 'webchat:someone-else' WHERE seq = 4")
    assert [(p.seq, p.fault) for p in verify(rows()).problems] == [(4, Fault.EDITED)]
    db.execute("UPDATE audit SET target = 'webchat:conv-3' WHERE seq = 4")
    assert verify(rows()).ok
    db.execute("DELETE FROM audit WHERE seq = 2")
    assert [(p.seq, p.fault) for p in verify(rows()).problems] == [(3, Fault.DELETED)]


def test_malformed_rows_are_reported_not_raised() -> None:
    entries = [e.as_row() for e in _chain(3)]
    entries[1]["details"] = "[1, 2]"
    del entries[2]["actor"]
    result = verify(entries)
    assert [(p.seq, p.fault) for p in result.problems] == [
        (2, Fault.MALFORMED),
        (3, Fault.MALFORMED),
    ]


def test_time_text_is_canonical() -> None:
    naive = datetime(2025, 1, 31, 9, 30)
    aware = datetime(2025, 1, 31, 10, 30, tzinfo=UTC).astimezone()
    assert format_time(naive) == "2025-01-31T09:30:00.000000Z"
    assert format_time(aware) == "2025-01-31T10:30:00.000000Z"
    assert json.loads(json.dumps(_chain(1)[0].as_row()))["at"] == "2025-01-31T09:30:00.000000Z"
