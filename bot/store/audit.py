"""The audit log: who did what to which session, and when (append-only, group-committed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from bot.envelope import SessionKey
from bot.store.batcher import Request, WriteBatcher
from bot.store.rows import utc
from bot.store.tables import audit

_INSERT_AUDIT: Final = audit.insert()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit row.

    Attributes:
        id: increasing row id.
        at: when (UTC).
        actor: who (``agent:NAME``, ``bot``, ``system``...).
        action: what (``handoff.claim``...).
        session_key: which session, if any.
        detail: JSON details.
    """

    id: int
    at: datetime
    actor: str
    action: str
    session_key: SessionKey | None
    detail: dict[str, Any]


@dataclass(slots=True, eq=False)
class AuditRequest(Request):
    """``audit``: one row to append (``at`` is the batch's time)."""

    row: dict[str, Any]


class AuditMixin(WriteBatcher):
    """The audit part of :class:`~bot.store.sql.SqlStore`."""

    async def audit(
        self, actor: str, action: str, session_key: SessionKey | None, detail: dict[str, Any]
    ) -> None:
        """Append an audit record (who did what to which session, and when)."""
        row = {"actor": actor, "action": action, "session_key": session_key, "detail": detail}
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
        return [
            AuditRecord(
                id=r.id,
                at=utc(r.at),
                actor=r.actor,
                action=r.action,
                session_key=SessionKey(r.session_key) if r.session_key is not None else None,
                detail=dict(r.detail),
            )
            for r in rows
        ]

    def _write_audits(self, conn: sa.Connection, batch: list[Request], now: datetime) -> None:
        """The batch's audit rows, stamped ``now``."""
        audits = [{**r.row, "at": now} for r in batch if isinstance(r, AuditRequest)]
        if audits:
            conn.execute(_INSERT_AUDIT, audits)
