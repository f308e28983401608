"""A tamper-evident audit log: each entry carries the SHA-256 of itself and of the one before.

An entry is ``seq`` (1, 2, 3...), ``actor``, ``at`` (the time), ``action``, ``target``,
``details`` (a JSON object), ``prev_hash`` (the previous entry's ``hash``, or
:data:`GENESIS_HASH` for the first) and ``hash``: the lower-case hex SHA-256 of the RFC 8785
(JSON Canonicalization Scheme) serialization of the object holding every other field::

    {"action": ..., "actor": ..., "at": "2025-01-31T09:30:00.000000Z", "details": {...},
     "prev_hash": ..., "seq": 7, "target": ...}

Editing a stored entry changes its hash; deleting one breaks the next entry's ``prev_hash`` and
leaves a gap in ``seq``; :func:`verify` reports both. Two limits, by construction:

* whoever can rewrite the whole table can recompute every hash after an edit. Pass a ``key``
  (HMAC-SHA256 instead of SHA-256, the key kept out of the database) and/or keep the latest
  :class:`ChainHead` somewhere the database's writers cannot reach (a log line, a backup, a
  second system) and give it to :func:`verify` as ``expected_head``;
* deleting the newest entries leaves a valid shorter chain: only ``expected_head`` detects it.

The module is pure: it builds entries and checks an iterable of rows (mappings or
:class:`AuditEntry`), so it runs over SQL rows as they are fetched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import rfc8785

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry."""

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(at: datetime) -> str:
    """The canonical text of an entry's time: UTC, microseconds, ``Z`` (RFC 3339).

    Args:
        at: an aware datetime, or a naive one taken as UTC (as SQLite returns them).

    Returns:
        e.g. ``2025-01-31T09:30:00.000000Z``.
    """
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime(_TIME_FORMAT)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest entry of a chain, worth keeping outside the database.

    Attributes:
        seq: its sequence number (0 for an empty chain).
        hash: its hash (:data:`GENESIS_HASH` for an empty chain).
    """

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit entry (field meanings in the module docstring).

    Attributes:
        seq: position in the chain, from 1.
        actor: who acted (``agent:alice``, ``system``, ``customer:u7``...).
        at: canonical UTC time text (:func:`format_time`).
        action: what was done (``login``, ``claim``, ``reply``, ``erase``, ``tool:create_ticket``).
        target: what it was done to (a session key, an agent, a setting name).
        details: JSON object with anything else (no message text or PII by convention).
        prev_hash: hash of the entry before.
        hash: this entry's hash.
    """

    seq: int
    actor: str
    at: str
    action: str
    target: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    @property
    def head(self) -> ChainHead:
        """This entry as a chain head."""
        return ChainHead(self.seq, self.hash)

    def as_row(self) -> dict[str, Any]:
        """The entry as a plain dict (JSON-serializable; a JSONL export line)."""
        row = asdict(self)
        row["details"] = dict(self.details)
        return row


def entry_hash(
    *,
    seq: int,
    actor: str,
    at: str,
    action: str,
    target: str,
    details: Mapping[str, Any],
    prev_hash: str,
    key: bytes | None = None,
) -> str:
    """The hash of an entry's fields.

    Args:
        seq: position in the chain, from 1.
        actor: who acted.
        at: canonical time text (:func:`format_time`).
        action: what was done.
        target: what it was done to.
        details: JSON object of extra facts.
        prev_hash: the previous entry's hash.
        key: HMAC key; None hashes with plain SHA-256.

    Returns:
        64 lower-case hex digits.

    Raises:
        rfc8785.CanonicalizationError: when ``details`` holds a value JSON cannot carry
            exactly (NaN, an integer beyond 2**53, a non-string key...).
    """
    payload: dict[str, Any] = {
        "seq": seq,
        "actor": actor,
        "at": at,
        "action": action,
        "target": target,
        "details": dict(details),
        "prev_hash": prev_hash,
    }
    data = rfc8785.dumps(payload)
    if key is not None:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def append_entry(
    head: ChainHead | AuditEntry | None,
    *,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
    at: datetime | None = None,
    key: bytes | None = None,
) -> AuditEntry:
    """Build the entry that follows ``head``.

    Appending must be serialized by the caller (one writer, or a transaction that reads the
    head and inserts under a unique ``seq``), or two entries will claim the same place.

    Args:
        head: the chain's newest entry or head; None for an empty chain.
        actor: who acted.
        action: what was done.
        target: what it was done to.
        details: JSON object of extra facts; None is ``{}``.
        at: when; None is now.
        key: HMAC key, as for :func:`entry_hash`.

    Returns:
        The new entry, ready to store.

    Raises:
        rfc8785.CanonicalizationError: on details JSON cannot carry exactly.
    """
    prev = head.head if isinstance(head, AuditEntry) else head or ChainHead(0, GENESIS_HASH)
    when = format_time(at or datetime.now(UTC))
    facts = dict(details or {})
    seq = prev.seq + 1
    digest = entry_hash(
        seq=seq,
        actor=actor,
        at=when,
        action=action,
        target=target,
        details=facts,
        prev_hash=prev.hash,
        key=key,
    )
    return AuditEntry(seq, actor, when, action, target, facts, prev.hash, digest)


class Fault(StrEnum):
    """What :func:`verify` found wrong."""

    EDITED = "edited"  # an entry's fields no longer match its hash, or the next link
    DELETED = "deleted"  # entries are missing before this one
    OUT_OF_ORDER = "out_of_order"  # seq does not increase
    TRUNCATED = "truncated"  # the chain ends before the expected head
    MALFORMED = "malformed"  # a row lacks a field or holds a wrong type


@dataclass(frozen=True, slots=True)
class Problem:
    """One fault found by :func:`verify`.

    Attributes:
        seq: the entry where it shows (the edited entry; for a deletion, the entry after
            the gap; for truncation, the last entry read, 0 when none).
        fault: what is wrong.
        detail: a human sentence (no field values beyond seq numbers and hash prefixes).
    """

    seq: int
    fault: Fault
    detail: str


@dataclass
class Verification:
    """Result of :func:`verify`.

    Attributes:
        entries: rows read.
        head: the last entry read (``ChainHead(0, GENESIS_HASH)``-like start when none).
        problems: faults in chain order; empty when the chain is intact.
    """

    entries: int = 0
    head: ChainHead = field(default_factory=lambda: ChainHead(0, GENESIS_HASH))
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _entry_from_row(row: Mapping[str, Any] | AuditEntry) -> AuditEntry:
    if isinstance(row, AuditEntry):
        return row
    at = row["at"]
    details = row.get("details") or {}
    if isinstance(details, str | bytes):
        details = json.loads(details)
    if not isinstance(details, Mapping):
        raise TypeError("details is not a JSON object")
    seq = row["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise TypeError("seq is not an integer")
    return AuditEntry(
        seq=seq,
        actor=str(row["actor"]),
        at=format_time(at) if isinstance(at, datetime) else str(at),
        action=str(row["action"]),
        target=str(row["target"]),
        details=details,
        prev_hash=str(row["prev_hash"]),
        hash=str(row["hash"]),
    )


def verify(
    rows: Iterable[Mapping[str, Any] | AuditEntry],
    *,
    key: bytes | None = None,
    after: ChainHead | None = None,
    expected_head: ChainHead | None = None,
) -> Verification:
    """Check a chain, row by row, in ``seq`` order.

    Args:
        rows: the entries oldest first; mappings need the keys of :class:`AuditEntry`
            (``at`` may be a datetime, ``details`` a JSON string), extra keys are ignored.
        key: the HMAC key the chain was written with, if any.
        after: where the rows start when older entries were archived (the head of the
            archived part); None means the rows start at ``seq`` 1.
        expected_head: the head recorded out of band; a chain that stops short of it is
            reported :attr:`Fault.TRUNCATED`, one that differs at it :attr:`Fault.EDITED`.

    Returns:
        What was read and every problem found.
    """
    result = Verification(head=after or ChainHead(0, GENESIS_HASH))
    prev = result.head
    for row in rows:
        result.entries += 1
        try:
            entry = _entry_from_row(row)
            digest = entry_hash(
                seq=entry.seq,
                actor=entry.actor,
                at=entry.at,
                action=entry.action,
                target=entry.target,
                details=entry.details,
                prev_hash=entry.prev_hash,
                key=key,
            )
        except (KeyError, TypeError, ValueError, rfc8785.CanonicalizationError) as exc:
            seq = prev.seq + 1
            result.problems.append(Problem(seq, Fault.MALFORMED, f"unreadable entry: {exc}"))
            prev = ChainHead(seq, str(row.get("hash", "")) if isinstance(row, Mapping) else "")
            continue
        if entry.seq <= prev.seq:
            result.problems.append(
                Problem(entry.seq, Fault.OUT_OF_ORDER, f"seq {entry.seq} after seq {prev.seq}")
            )
        elif entry.seq > prev.seq + 1:
            missing = entry.seq - prev.seq - 1
            result.problems.append(
                Problem(entry.seq, Fault.DELETED, f"{missing} entries missing before this one")
            )
        elif entry.prev_hash != prev.hash:
            result.problems.append(
                Problem(
                    prev.seq,
                    Fault.EDITED,
                    f"entry {entry.seq} links to {entry.prev_hash[:12]}..., "
                    f"entry {prev.seq} hashes to {prev.hash[:12]}...",
                )
            )
        if not hmac.compare_digest(digest, entry.hash):
            result.problems.append(
                Problem(entry.seq, Fault.EDITED, "fields do not match the stored hash")
            )
        prev = entry.head
    result.head = prev
    if expected_head is not None:
        if prev.seq < expected_head.seq:
            result.problems.append(
                Problem(
                    prev.seq,
                    Fault.TRUNCATED,
                    f"chain ends at seq {prev.seq}, expected head is seq {expected_head.seq}",
                )
            )
        elif prev.seq == expected_head.seq and prev.hash != expected_head.hash:
            result.problems.append(
                Problem(prev.seq, Fault.EDITED, "the newest entry differs from the expected head")
            )
    return result
