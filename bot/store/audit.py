"""The audit log: who did what to which session, and when; append-only and tamper-evident.

Every row is a link of the hash chain of :mod:`bot.privacy.audit_chain` (SHA-256, or
HMAC-SHA256 with ``settings.audit_key``, over RFC 8785 canonical JSON). A row has two parts:

* the **public part**, covered by the chain: ``seq``, ``actor``, ``at``, ``action`` and
  ``seal``. The chain entry is ``{"seq", "actor", "at", "action", "target": "",
  "details": {"seal": SEAL}, "prev_hash"}``, hashed into ``hash``;
* the **personal part**: ``session_key`` (it holds the customer's platform id in direct
  conversations) and ``detail``. ``seal`` is HMAC-SHA256 keyed by the row's random 16-byte
  ``salt`` over the RFC 8785 JSON ``{"detail": ..., "session_key": ...}``.

Editing the public part breaks the chain; editing the personal part no longer matches the seal;
deleting a row leaves a gap in ``seq``. Erasing a customer (:mod:`bot.store.subjects`) clears
``salt``, ``session_key`` and ``detail`` of their rows: the seal stays, the chain still
verifies, and without the salt the seal cannot be tested against guessed identifiers. So an
erased row's personal part is gone for good, and the only change verification cannot tell
from a legitimate erasure is one more erasure (every erasure also writes an ``privacy.erase``
entry with the number of rows it cleared).

Appends are serialized in the database so two processes never fork the chain: PostgreSQL takes
the transaction-scoped advisory lock :data:`CHAIN_LOCK_KEY` before reading the head, SQLite
takes its write lock first (one writer at a time); the unique index on ``seq`` refuses any fork
that slipped through, and the batch is retried. Retention (:mod:`bot.store.retention`) deletes
the oldest rows and appends an ``audit.pruned`` entry naming the last deleted link, which
verification starts from.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import rfc8785
import sqlalchemy as sa

from bot.envelope import SessionKey
from bot.errors import PayloadInvalid
from bot.privacy.audit_chain import (
    GENESIS_HASH,
    ChainHead,
    Fault,
    Problem,
    Verification,
    append_entry,
    verify,
)
from bot.store.batcher import Request, WriteBatcher
from bot.store.engine import json_dumps
from bot.store.rows import utc
from bot.store.tables import audit

CHAIN_LOCK_KEY: Final = 0x5357_4155_4454  # "SWAUDT"
"""PostgreSQL advisory lock (transaction-scoped) held while a process appends to the chain."""

PRUNED_ACTION: Final = "audit.pruned"
"""Action of the entry retention appends after deleting the oldest entries.

Its detail is ``{"through_seq": N, "through_hash": H, "deleted": COUNT}``: the last deleted
link, where verification starts."""

VERIFY_PAGE: Final = 5000
"""Rows read per query while verifying."""

_INSERT_AUDIT: Final = audit.insert()
_HEAD: Final = (
    sa.select(audit.c.seq, audit.c.hash)
    .where(audit.c.seq.is_not(None))
    .order_by(audit.c.seq.desc())
    .limit(1)
)
_UNCHAINED: Final = sa.select(audit).where(audit.c.seq.is_(None)).order_by(audit.c.id)
_SQLITE_WRITE_LOCK: Final = sa.update(audit).where(audit.c.id == -1).values(seq=audit.c.seq)
"""A write that changes nothing: on SQLite it takes the database's write lock first."""


def seal_of(salt: str, session_key: str | None, detail: Mapping[str, Any]) -> str:
    """The seal of an entry's personal part.

    Args:
        salt: the row's salt (32 hex digits: 16 random bytes).
        session_key: the session, or None.
        detail: the JSON details as stored.

    Returns:
        64 lower-case hex digits: HMAC-SHA256(salt, RFC 8785 JSON of both).

    Raises:
        rfc8785.CanonicalizationError: for a detail JSON cannot carry exactly.
        ValueError: for a salt that is not hex.
    """
    payload = rfc8785.dumps({"session_key": session_key, "detail": dict(detail)})
    return hmac.new(bytes.fromhex(salt), payload, hashlib.sha256).hexdigest()


def chain_link(row: Any) -> dict[str, Any]:
    """The :mod:`bot.privacy.audit_chain` entry of an audit row (its public part)."""
    return {
        "seq": row.seq,
        "actor": row.actor,
        "at": row.at,
        "action": row.action,
        "target": "",
        "details": {"seal": row.seal},
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def lock_chain(conn: sa.Connection) -> None:
    """Serialize appends: the advisory lock (PostgreSQL) or the write lock (SQLite).

    Call inside the transaction that appends; the lock ends with it.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK_KEY)))
    else:
        conn.execute(_SQLITE_WRITE_LOCK)


def export_line(row: Any) -> dict[str, Any]:
    """One line of the log's JSON Lines export (``audit export``, the console's download).

    Returns:
        The row's chain link (:func:`chain_link`: seq, actor, time, action, hashes) with
        ``session_key``, ``detail`` and ``erased`` (True once the personal part was erased).
    """
    return {
        **chain_link(row),
        "session_key": row.session_key,
        "detail": row.detail,
        "erased": row.salt is None,
    }


def chain_head(conn: sa.Connection) -> ChainHead:
    """The newest link (``seq`` 0 and the genesis hash when the chain is empty)."""
    row = conn.execute(_HEAD).first()
    return ChainHead(0, GENESIS_HASH) if row is None else ChainHead(row.seq, row.hash)


def append_rows(
    conn: sa.Connection, rows: list[dict[str, Any]], now: datetime, key: bytes | None
) -> ChainHead:
    """Chain and insert audit rows (the caller holds :func:`lock_chain`).

    Rows written before the chain existed (``seq`` NULL) are chained first, in ``id`` order.

    Args:
        conn: the appending transaction's connection.
        rows: ``actor``, ``action``, ``session_key``, ``detail``, ``salt``, ``seal`` each.
        now: their time (UTC).
        key: HMAC key of the chain, if any.

    Returns:
        The new head.
    """
    head = chain_head(conn)
    for old in conn.execute(_UNCHAINED).all():
        salt = secrets.token_hex(16)
        detail = old.detail
        try:
            seal = seal_of(salt, old.session_key, detail)
        except (TypeError, ValueError, rfc8785.CanonicalizationError):
            # Details JSON cannot carry exactly (NaN, huge integers): kept as their JSON text.
            detail = {"unsealable_detail": json_dumps(detail)}
            seal = seal_of(salt, old.session_key, detail)
        entry = append_entry(
            head,
            actor=old.actor,
            action=old.action,
            target="",
            details={"seal": seal},
            at=utc(old.at),
            key=key,
        )
        conn.execute(
            sa.update(audit)
            .where(audit.c.id == old.id)
            .values(
                seq=entry.seq,
                salt=salt,
                seal=seal,
                detail=detail,
                prev_hash=entry.prev_hash,
                hash=entry.hash,
            )
        )
        head = entry.head
    chained = []
    for row in rows:
        entry = append_entry(
            head,
            actor=row["actor"],
            action=row["action"],
            target="",
            details={"seal": row["seal"]},
            at=now,
            key=key,
        )
        chained.append(
            {**row, "at": now, "seq": entry.seq, "prev_hash": entry.prev_hash, "hash": entry.hash}
        )
        head = entry.head
    if chained:
        conn.execute(_INSERT_AUDIT, chained)
    return head


def personal_row(
    actor: str, action: str, session_key: str | None, detail: Mapping[str, Any]
) -> dict[str, Any]:
    """An audit row before chaining: the details as JSON stores them, a fresh salt, the seal.

    Raises:
        bot.errors.PayloadInvalid: for details JSON cannot carry exactly.
    """
    try:
        stored = json.loads(json_dumps(dict(detail)))
        salt = secrets.token_hex(16)
        seal = seal_of(salt, session_key, stored)
    except (ValueError, rfc8785.CanonicalizationError) as exc:
        raise PayloadInvalid(f"audit details are not exact JSON: {exc}") from exc
    return {
        "actor": actor,
        "action": action,
        "session_key": session_key,
        "detail": stored,
        "salt": salt,
        "seal": seal,
    }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit row.

    Attributes:
        id: increasing row id.
        at: when (UTC).
        actor: who (``agent:NAME``, ``bot``, ``system``...).
        action: what (``handoff.claim``...).
        session_key: which session, if any (None too once erased).
        detail: JSON details (``{}`` once erased).
        seq: its place in the hash chain (None until chained).
        hash: its link hash.
        erased: True when its personal part was erased.
    """

    id: int
    at: datetime
    actor: str
    action: str
    session_key: SessionKey | None
    detail: dict[str, Any]
    seq: int | None = None
    hash: str | None = None
    erased: bool = False


def record_from_row(r: Any) -> AuditRecord:
    """An :class:`AuditRecord` from a row of the ``audit`` table."""
    return AuditRecord(
        id=r.id,
        at=utc(r.at),
        actor=r.actor,
        action=r.action,
        session_key=SessionKey(r.session_key) if r.session_key is not None else None,
        detail=dict(r.detail),
        seq=r.seq,
        hash=r.hash,
        erased=r.seq is not None and r.salt is None,
    )


@dataclass
class AuditCheck:
    """What :meth:`AuditMixin.verify_audit` found.

    Attributes:
        chain: the chain verification (entries read, head, problems in ``seq`` order).
        erased: entries whose personal part was erased (seal kept).
        unchained: rows written before the chain existed, chained at the next append.
        anchor: where verification started after retention pruned older entries.
    """

    chain: Verification = field(default_factory=Verification)
    erased: int = 0
    unchained: int = 0
    anchor: ChainHead | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return self.chain.ok

    @property
    def first_problem(self) -> Problem | None:
        """The problem at the lowest ``seq``, if any."""
        return min(self.chain.problems, key=lambda p: p.seq, default=None)


def _check_seal(row: Any, problems: list[Problem]) -> bool:
    """Check one row's personal part against its seal; True when it was erased."""
    if row.salt is None:
        if row.session_key is not None or row.detail:
            problems.append(Problem(row.seq, Fault.EDITED, "an erased entry holds data"))
        return True
    try:
        expected = seal_of(row.salt, row.session_key, row.detail)
    except (ValueError, TypeError, rfc8785.CanonicalizationError):
        expected = ""
    if not hmac.compare_digest(expected, str(row.seal)):
        problems.append(
            Problem(row.seq, Fault.EDITED, "session or details do not match the entry's seal")
        )
    return False


def _anchor(conn: sa.Connection) -> ChainHead | None:
    row = conn.execute(
        sa.select(audit.c.detail)
        .where(audit.c.action == PRUNED_ACTION, audit.c.salt.is_not(None))
        .order_by(audit.c.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    detail = row.detail
    return ChainHead(int(detail["through_seq"]), str(detail["through_hash"]))


def _unchained_count(conn: sa.Connection) -> int:
    return int(conn.scalar(sa.select(sa.func.count()).where(audit.c.seq.is_(None))) or 0)


class AuditMixin(WriteBatcher):
    """The audit part of :class:`~bot.store.sql.SqlStore`."""

    _audit_key: bytes | None
    """HMAC key of the chain (``settings.audit_key``), None for plain SHA-256."""

    async def audit(
        self, actor: str, action: str, session_key: SessionKey | None, detail: dict[str, Any]
    ) -> None:
        """Append an audit record (who did what to which session, and when).

        ``actor`` and ``action`` are kept for as long as the log: never put a customer's
        identifier there; ``session_key`` and ``detail`` are erased with the customer.

        Raises:
            bot.errors.PayloadInvalid: for details JSON cannot carry exactly (NaN, integers
                beyond 2**53).
            bot.errors.BackendUnavailable: when the database cannot be written.
        """
        row = personal_row(actor, action, session_key, detail)
        await self._submit(AuditRequest(self._future(), row))

    async def audit_records(
        self, *, session_key: SessionKey | None = None, limit: int = 200
    ) -> list[AuditRecord]:
        """Audit rows, newest first, optionally of one session (not part of ``Store``)."""
        a = audit.c
        stmt = sa.select(audit).order_by(a.id.desc()).limit(limit)
        if session_key is not None:
            stmt = stmt.where(a.session_key == session_key)
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [record_from_row(r) for r in rows]

    async def audit_chain_rows(self, *, after_seq: int = 0, limit: int = 1000) -> list[Any]:
        """Chained rows with ``seq > after_seq``, oldest first (for exports and checks)."""
        stmt = sa.select(audit).where(audit.c.seq > after_seq).order_by(audit.c.seq).limit(limit)
        return await self._read(lambda conn: list(conn.execute(stmt).all()))

    async def verify_audit(self, *, expected_head: ChainHead | None = None) -> AuditCheck:
        """Check the whole audit log: every link, every seal, no gap.

        Args:
            expected_head: the head recorded out of band earlier (catches deletion of the
                newest entries and a rewritten chain).

        Returns:
            What was read and found (problems name ``seq`` numbers only, never contents).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be read.
        """
        check = AuditCheck()
        check.anchor = await self._read(_anchor)
        check.unchained = await self._read(_unchained_count)
        head = check.anchor or ChainHead(0, GENESIS_HASH)
        chain = Verification(head=head)
        while True:
            rows = await self.audit_chain_rows(after_seq=head.seq, limit=VERIFY_PAGE)
            if not rows:
                break
            page = verify([chain_link(r) for r in rows], key=self._audit_key, after=head)
            chain.entries += page.entries
            chain.problems += page.problems
            for row in rows:
                check.erased += _check_seal(row, chain.problems)
            head = page.head
        chain.head = head
        if expected_head is not None:
            tail = verify([], after=head, expected_head=expected_head)
            chain.problems += tail.problems
        chain.problems.sort(key=lambda p: p.seq)
        check.chain = chain
        return check

    def _write_audits(self, conn: sa.Connection, batch: list[Request], now: datetime) -> None:
        """Chain the batch's audit rows, stamped ``now``, under the chain's lock."""
        rows = [r.row for r in batch if isinstance(r, AuditRequest)]
        if rows:
            lock_chain(conn)
            append_rows(conn, rows, now, self._audit_key)


@dataclass(slots=True, eq=False)
class AuditRequest(Request):
    """``audit``: one row to append (``at`` is the batch's time)."""

    row: dict[str, Any]
