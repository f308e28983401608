"""Retention: conversations, messages and audit entries are deleted once past their age.

Three ages, in days (0 keeps forever), from ``Settings`` (``retention_conversation_days``,
``retention_message_days``, ``retention_audit_days``):

* a **conversation** whose last activity (``updated_at``) is older, and that no human holds
  (mode ``bot`` or ``closed``), is deleted with every row of every table keyed by its
  ``session_key`` (messages, outbox entries, the local backend's tickets and their comments,
  plugin tables), at most :data:`SESSIONS_PER_SWEEP` per transaction;
* a **message** older than its age is deleted whatever its conversation's activity, unless
  it is a customer message not yet handled (recovery needs it);
* **audit entries** older than theirs are deleted from the oldest on, through the newest
  entry past the age, and an ``audit.pruned`` entry naming the last deleted link is appended
  (:mod:`bot.store.audit`), so the rest of the chain still verifies and a deletion beyond it
  does not.

The hub runs :meth:`RetentionMixin.apply_retention` periodically (:mod:`bot.hub.retention`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa

from bot.config import Settings
from bot.envelope import SessionKey
from bot.privacy.audit_chain import ChainHead
from bot.store.audit import (
    PRUNED_ACTION,
    AuditMixin,
    append_rows,
    chain_head,
    lock_chain,
    personal_row,
)
from bot.store.reflection import database_tables, delete_with_children
from bot.store.subjects import SessionsCall
from bot.store.tables import audit, conversations, messages

SESSIONS_PER_SWEEP: Final = 500
"""Conversations deleted per transaction (the sweep repeats until none is left)."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of record is kept, in days; 0 keeps it forever."""

    conversation_days: int = 0
    message_days: int = 0
    audit_days: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        """The ``retention_*_days`` settings."""
        return cls(
            settings.retention_conversation_days,
            settings.retention_message_days,
            settings.retention_audit_days,
        )

    @property
    def active(self) -> bool:
        """True when something is ever deleted."""
        return bool(self.conversation_days or self.message_days or self.audit_days)


@dataclass(slots=True)
class RetentionReport:
    """What one sweep deleted.

    Attributes:
        deleted: rows per table (audit entries under ``audit``).
        more: True when a limit was reached and another sweep has work left.
        audit_head: the audit chain's newest link after the sweep (worth logging: a copy
            outside the database for ``audit verify --expect-head``).
    """

    deleted: dict[str, int] = field(default_factory=dict)
    more: bool = False
    audit_head: ChainHead | None = None

    def add(self, counts: dict[str, int]) -> None:
        """Add per-table counts."""
        for name, n in counts.items():
            if n:
                self.deleted[name] = self.deleted.get(name, 0) + n


def _expire_conversations(
    conn: sa.Connection, cutoff: datetime, report: RetentionReport, touched: list[SessionKey]
) -> None:
    c = conversations.c
    keys = list(
        conn.execute(
            sa.select(c.session_key)
            .where(c.updated_at < cutoff, c.mode.in_(("bot", "closed")))
            .order_by(c.updated_at)
            .limit(SESSIONS_PER_SWEEP)
        ).scalars()
    )
    if not keys:
        return
    report.more = len(keys) == SESSIONS_PER_SWEEP
    touched.extend(SessionKey(k) for k in keys)
    tables = database_tables(conn)
    for table in tables:
        if "session_key" in table.c and table.name != audit.name:
            report.add(delete_with_children(conn, tables, table, table.c.session_key.in_(keys)))


def _expire_messages(conn: sa.Connection, cutoff: datetime, report: RetentionReport) -> None:
    m = messages.c
    old = sa.and_(m.created_at < cutoff, sa.or_(m.inbound.is_(None), m.handled.is_(True)))
    report.add({"messages": conn.execute(sa.delete(messages).where(old)).rowcount or 0})


def _prune_audit(conn: sa.Connection, cutoff: datetime, now: datetime, key: bytes | None) -> int:
    """Delete the chain's expired prefix; append the ``audit.pruned`` anchor. Returns rows deleted.

    The prefix ends before the first entry still within its age (found by walking ``seq`` up
    from the oldest: entries are appended in time order, so only expired rows are read).
    """
    lock_chain(conn)
    a = audit.c
    chained = a.seq.is_not(None)
    first_kept = conn.scalar(
        sa.select(a.seq).where(chained, a.at >= cutoff).order_by(a.seq).limit(1)
    )
    bound = [chained] if first_kept is None else [chained, a.seq < first_kept]
    last = conn.execute(
        sa.select(a.seq, a.hash).where(*bound).order_by(a.seq.desc()).limit(1)
    ).first()
    if last is None:
        return 0
    worth = conn.scalar(
        sa.select(a.seq).where(a.seq <= last.seq, a.action != PRUNED_ACTION).limit(1)
    )
    if worth is None:  # only the previous anchor is old: nothing to prune
        return 0
    n = conn.execute(sa.delete(audit).where(a.seq <= last.seq)).rowcount or 0
    detail = {"through_seq": last.seq, "through_hash": last.hash, "deleted": n}
    append_rows(conn, [personal_row("system", PRUNED_ACTION, None, detail)], now, key)
    return n


def sweep(
    conn: sa.Connection,
    policy: RetentionPolicy,
    now: datetime,
    key: bytes | None,
    touched: list[SessionKey],
) -> RetentionReport:
    """One retention sweep in the caller's transaction (see the module docstring).

    Args:
        conn: the writer's connection (the caller commits).
        policy: the ages.
        now: the transaction's time (UTC).
        key: the audit chain's HMAC key.
        touched: filled with the deleted sessions (their caches are dropped after commit).
    """
    report = RetentionReport()
    if policy.conversation_days:
        cutoff = now - timedelta(days=policy.conversation_days)
        _expire_conversations(conn, cutoff, report, touched)
    if policy.message_days:
        _expire_messages(conn, now - timedelta(days=policy.message_days), report)
    if policy.audit_days:
        pruned = _prune_audit(conn, now - timedelta(days=policy.audit_days), now, key)
        report.add({"audit": pruned})
    report.audit_head = chain_head(conn)
    return report


class RetentionMixin(AuditMixin):
    """Retention on :class:`~bot.store.sql.SqlStore`."""

    async def apply_retention(self, policy: RetentionPolicy) -> RetentionReport:
        """Delete what is past its age, in transactions of bounded size, until nothing is left.

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """
        total = RetentionReport()
        while True:
            report = await self._sweep_once(policy)
            total.add(report.deleted)
            total.audit_head = report.audit_head
            if not report.more:
                return total
            policy = RetentionPolicy(conversation_days=policy.conversation_days)

    async def _sweep_once(self, policy: RetentionPolicy) -> RetentionReport:
        touched: list[SessionKey] = []

        def run(conn: sa.Connection, now: datetime) -> RetentionReport:
            touched.clear()  # a batch that failed is run again
            return sweep(conn, policy, now, self._audit_key, touched)

        report: RetentionReport = await self._submit(
            SessionsCall(self._future(), run, touched=touched)
        )
        return report
