"""SLA policies and timers: targets per team and priority, and each conversation's clock.

Timers are rows (``sla_timers``), so a restart keeps them. A breach is recorded with a
compare-and-set (``UPDATE ... WHERE <kind>_breached_at IS NULL``): when two sweepers look at
once, one records it and notifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bot.envelope import SessionKey
from bot.errors import NotFound
from bot.store.batcher import Call, WriteBatcher
from bot.store.routing_records import BreachKind, Priority, SlaPolicy, SlaTimer
from bot.store.tables import sla_policies, sla_timers


def _policy(row: Any) -> SlaPolicy:
    return SlaPolicy(
        name=row.name,
        team=row.team,
        priority=Priority(row.priority) if row.priority else None,
        first_response_s=row.first_response_s,
        resolution_s=row.resolution_s,
        business_hours=row.business_hours,
        escalate_to=Priority(row.escalate_to) if row.escalate_to else None,
    )


def _timer(row: Any) -> SlaTimer:
    breaches = {
        kind: at
        for kind, at in (
            ("first_response", row.first_response_breached_at),
            ("resolution", row.resolution_breached_at),
        )
        if at is not None
    }
    return SlaTimer(
        session_key=SessionKey(row.session_key),
        policy=row.policy,
        started_at=row.started_at,
        first_response_due=row.first_response_due,
        resolution_due=row.resolution_due,
        first_response_at=row.first_response_at,
        stopped_at=row.stopped_at,
        breaches=breaches,
    )


class SlaMixin(WriteBatcher):
    """The SLA part of :class:`~bot.store.sql.SqlStore`."""

    async def save_sla_policy(self, policy: SlaPolicy) -> None:
        """Create or replace a policy (by name)."""

        def run(conn: sa.Connection, now: datetime) -> None:
            values = {
                "team": policy.team,
                "priority": policy.priority.value if policy.priority else None,
                "first_response_s": policy.first_response_s,
                "resolution_s": policy.resolution_s,
                "business_hours": policy.business_hours,
                "escalate_to": policy.escalate_to.value if policy.escalate_to else None,
            }
            p = sla_policies.c
            if (
                conn.execute(
                    sla_policies.update().where(p.name == policy.name).values(values)
                ).rowcount
                == 0
            ):
                conn.execute(
                    sla_policies.insert().values(name=policy.name, created_at=now, **values)
                )

        await self._submit(Call(self._future(), run))

    async def delete_sla_policy(self, name: str) -> None:
        """Delete a policy (running timers keep their due times).

        Raises:
            bot.errors.NotFound: no policy has that name.
        """

        def run(conn: sa.Connection, now: datetime) -> None:
            if (
                conn.execute(sla_policies.delete().where(sla_policies.c.name == name)).rowcount
                == 0
            ):
                raise NotFound(f"no SLA policy {name!r}")

        await self._submit(Call(self._future(), run))

    async def sla_policies(self) -> list[SlaPolicy]:
        """Every policy, by name."""
        stmt = sa.select(sla_policies).order_by(sla_policies.c.name)
        return await self._read(lambda conn: [_policy(r) for r in conn.execute(stmt)])

    async def start_sla_timer(self, timer: SlaTimer) -> None:
        """Start (or restart, on a new escalation) a conversation's clock."""

        def run(conn: sa.Connection, now: datetime) -> None:
            values = {
                "policy": timer.policy,
                "started_at": timer.started_at,
                "first_response_due": timer.first_response_due,
                "resolution_due": timer.resolution_due,
                "first_response_at": None,
                "stopped_at": None,
                "first_response_breached_at": None,
                "resolution_breached_at": None,
            }
            t = sla_timers.c
            stmt = sla_timers.update().where(t.session_key == timer.session_key).values(values)
            if conn.execute(stmt).rowcount == 0:
                conn.execute(sla_timers.insert().values(session_key=timer.session_key, **values))

        await self._submit(Call(self._future(), run))

    async def sla_responded(self, session_key: SessionKey) -> None:
        """Record the first agent reply (later replies change nothing)."""

        def run(conn: sa.Connection, now: datetime) -> None:
            t = sla_timers.c
            conn.execute(
                sla_timers.update()
                .where(t.session_key == session_key, t.first_response_at.is_(None))
                .values(first_response_at=now)
            )

        await self._submit(Call(self._future(), run))

    async def stop_sla_timer(self, session_key: SessionKey) -> None:
        """Stop a running clock (resolve or close); a reply not given yet stops counting too."""

        def run(conn: sa.Connection, now: datetime) -> None:
            t = sla_timers.c
            conn.execute(
                sla_timers.update()
                .where(t.session_key == session_key, t.stopped_at.is_(None))
                .values(stopped_at=now)
            )

        await self._submit(Call(self._future(), run))

    async def sla_timers(
        self, keys: Sequence[SessionKey] | None = None, *, running: bool = False
    ) -> list[SlaTimer]:
        """Timers of ``keys`` (or all), only the running ones with ``running``."""
        t = sla_timers.c
        stmt = sa.select(sla_timers).order_by(t.resolution_due)
        if keys is not None:
            stmt = stmt.where(t.session_key.in_(list(keys)))
        if running:
            stmt = stmt.where(t.stopped_at.is_(None))
        return await self._read(lambda conn: [_timer(r) for r in conn.execute(stmt)])

    async def due_sla_breaches(self, now: datetime) -> list[tuple[SlaTimer, BreachKind]]:
        """Running timers past a due time whose breach is not recorded yet, oldest due first."""
        t = sla_timers.c
        first = sa.and_(
            t.first_response_at.is_(None),
            t.first_response_breached_at.is_(None),
            t.first_response_due <= now,
        )
        resolution = sa.and_(t.resolution_breached_at.is_(None), t.resolution_due <= now)
        stmt = (
            sa.select(sla_timers)
            .where(t.stopped_at.is_(None), sa.or_(first, resolution))
            .order_by(t.first_response_due)
            .limit(500)
        )

        def run(conn: sa.Connection) -> list[tuple[SlaTimer, BreachKind]]:
            found: list[tuple[SlaTimer, BreachKind]] = []
            for row in conn.execute(stmt):
                timer = _timer(row)
                if (
                    timer.first_response_at is None
                    and "first_response" not in timer.breaches
                    and timer.first_response_due <= now
                ):
                    found.append((timer, "first_response"))
                if "resolution" not in timer.breaches and timer.resolution_due <= now:
                    found.append((timer, "resolution"))
            return found

        return await self._read(run)

    async def record_sla_breach(self, session_key: SessionKey, kind: BreachKind) -> bool:
        """Record a breach once; False when it was recorded already or the clock stopped."""
        column = sla_timers.c[f"{kind}_breached_at"]

        def run(conn: sa.Connection, now: datetime) -> bool:
            t = sla_timers.c
            stmt = (
                sla_timers.update()
                .where(t.session_key == session_key, column.is_(None), t.stopped_at.is_(None))
                .values({column.name: now})
            )
            return bool(conn.execute(stmt).rowcount)

        result: bool = await self._submit(Call(self._future(), run))
        return result
