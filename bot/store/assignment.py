"""Teams, agent presence and capacity, conversation routing, and the atomic assignment.

:meth:`AssignmentMixin.assign` is the one way a conversation gets an owner with a capacity
check: in one transaction it locks the agent's ``agent_status`` row (``SELECT ... FOR UPDATE``
on PostgreSQL; SQLite has one writer), counts what the agent owns, and changes the session's
mode with a compare-and-set ``UPDATE ... WHERE mode IN (...)``. Two processes assigning at
once therefore never give one conversation two owners, nor an agent more than its capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bot.envelope import SessionKey
from bot.errors import Conflict, NotFound
from bot.store.base import Conversation, SessionMode
from bot.store.batcher import Call, WriteBatcher
from bot.store.routing_records import AgentStatus, Presence, Priority, Routing, Team
from bot.store.rows import conversation_from_row
from bot.store.tables import (
    agent_status,
    conversation_routing,
    conversations,
    team_members,
    teams,
)


class AtCapacity(Conflict):
    """The agent already owns as many conversations as its capacity allows (HTTP 409)."""


class NotOnline(Conflict):
    """Auto-assignment skipped an agent that is not ``online`` (HTTP 409)."""


def _loads(conn: sa.Connection) -> dict[str, int]:
    c = conversations.c
    stmt = (
        sa.select(c.assigned_agent, sa.func.count())
        .where(c.mode == SessionMode.HUMAN.value, c.assigned_agent.is_not(None))
        .group_by(c.assigned_agent)
    )
    return {name: int(n) for name, n in conn.execute(stmt)}


def _status(row: Any, load: int) -> AgentStatus:
    return AgentStatus(
        name=row.name,
        presence=Presence(row.presence),
        capacity=row.capacity,
        load=load,
        seen_at=row.seen_at,
        last_assigned_at=row.last_assigned_at,
    )


def _ensure_status(conn: sa.Connection, name: str, now: datetime) -> None:
    if conn.scalar(sa.select(agent_status.c.name).where(agent_status.c.name == name)) is None:
        conn.execute(
            agent_status.insert().values(
                name=name, presence=Presence.OFFLINE.value, updated_at=now
            )
        )


class AssignmentMixin(WriteBatcher):
    """The teams, presence, routing and assignment part of :class:`~bot.store.sql.SqlStore`."""

    # --- teams ----------------------------------------------------------------------------------

    async def save_team(self, team: Team) -> None:
        """Create or replace a team and its member list."""

        def run(conn: sa.Connection, now: datetime) -> None:
            values = {
                "display_name": team.display_name,
                "channels": list(team.channels),
                "topics": list(team.topics),
            }
            updated = conn.execute(teams.update().where(teams.c.name == team.name).values(values))
            if updated.rowcount == 0:
                conn.execute(teams.insert().values(name=team.name, created_at=now, **values))
            conn.execute(team_members.delete().where(team_members.c.team == team.name))
            if team.members:
                conn.execute(
                    team_members.insert(), [{"team": team.name, "agent": a} for a in team.members]
                )

        await self._submit(Call(self._future(), run))

    async def delete_team(self, name: str) -> None:
        """Delete a team; its waiting conversations go to the general queue.

        Raises:
            bot.errors.NotFound: no team has that name.
        """

        def run(conn: sa.Connection, now: datetime) -> None:
            if conn.scalar(sa.select(teams.c.name).where(teams.c.name == name)) is None:
                raise NotFound(f"no team {name!r}")
            conn.execute(team_members.delete().where(team_members.c.team == name))
            conn.execute(teams.delete().where(teams.c.name == name))
            conn.execute(
                conversation_routing.update()
                .where(conversation_routing.c.team == name)
                .values(team=None, updated_at=now)
            )

        await self._submit(Call(self._future(), run))

    async def teams(self) -> list[Team]:
        """Every team with its members, by name."""

        def run(conn: sa.Connection) -> list[Team]:
            members: dict[str, list[str]] = {}
            for row in conn.execute(sa.select(team_members).order_by(team_members.c.agent)):
                members.setdefault(row.team, []).append(row.agent)
            return [
                Team(
                    name=row.name,
                    display_name=row.display_name,
                    channels=tuple(row.channels or ()),
                    topics=tuple(row.topics or ()),
                    members=tuple(members.get(row.name, ())),
                )
                for row in conn.execute(sa.select(teams).order_by(teams.c.name))
            ]

        return await self._read(run)

    # --- presence and capacity ------------------------------------------------------------------

    async def agent_statuses(self) -> list[AgentStatus]:
        """Presence, capacity and load of every agent with a status row, by name."""

        def run(conn: sa.Connection) -> list[AgentStatus]:
            loads = _loads(conn)
            rows = conn.execute(sa.select(agent_status).order_by(agent_status.c.name))
            return [_status(r, loads.get(r.name, 0)) for r in rows]

        return await self._read(run)

    async def set_agent_status(
        self,
        name: str,
        *,
        presence: Presence | None = None,
        capacity: int | None = None,
        clear_capacity: bool = False,
        seen: bool = False,
    ) -> None:
        """Change an agent's presence, capacity or ``seen_at``.

        ``clear_capacity`` sets the capacity back to ``settings.agent_capacity``; ``seen``
        sets ``seen_at`` to now. The row is created when missing (presence ``offline``).
        """

        def run(conn: sa.Connection, now: datetime) -> None:
            _ensure_status(conn, name, now)
            values: dict[str, Any] = {"updated_at": now}
            if presence is not None:
                values["presence"] = presence.value
            if capacity is not None or clear_capacity:
                values["capacity"] = capacity
            if seen:
                values["seen_at"] = now
            conn.execute(agent_status.update().where(agent_status.c.name == name).values(values))

        await self._submit(Call(self._future(), run))

    async def touch_agents(self, names: Sequence[str]) -> None:
        """Record a sign of life (``seen_at`` = now) of agents with a console session open."""
        if not names:
            return

        def run(conn: sa.Connection, now: datetime) -> None:
            conn.execute(
                agent_status.update()
                .where(agent_status.c.name.in_(list(names)))
                .values(seen_at=now)
            )

        await self._submit(Call(self._future(), run))

    async def expire_presence(self, seen_before: datetime) -> list[str]:
        """Set ``offline`` the online or away agents not seen since ``seen_before``.

        Returns:
            Their names (compare-and-set: one process reports each).
        """

        def run(conn: sa.Connection, now: datetime) -> list[str]:
            s = agent_status.c
            stale = sa.and_(
                s.presence != Presence.OFFLINE.value,
                sa.or_(s.seen_at.is_(None), s.seen_at < seen_before),
            )
            names = list(conn.scalars(sa.select(s.name).where(stale)))
            if names:
                conn.execute(
                    agent_status.update()
                    .where(stale, s.name.in_(names))
                    .values(presence=Presence.OFFLINE.value, updated_at=now)
                )
            return names

        result: list[str] = await self._submit(Call(self._future(), run))
        return result

    # --- routing --------------------------------------------------------------------------------

    async def set_routing(
        self,
        session_key: SessionKey,
        *,
        team: str | None = None,
        keep_team: bool = False,
        priority: Priority | None = None,
    ) -> Routing:
        """Put a conversation in a team's queue and/or set its priority (row made if missing).

        Args:
            session_key: the conversation.
            team: its team, None for the general queue (ignored with ``keep_team``).
            keep_team: leave the stored team as it is.
            priority: the new priority; None keeps it (``normal`` for a new row).
        """

        def run(conn: sa.Connection, now: datetime) -> Routing:
            r = conversation_routing.c
            row = conn.execute(
                sa.select(conversation_routing).where(r.session_key == session_key)
            ).one_or_none()
            new_team = row.team if (keep_team and row is not None) else team
            if keep_team and row is None:
                new_team = None
            new_priority = priority or (Priority(row.priority) if row else Priority.NORMAL)
            values = {"team": new_team, "priority": new_priority.value, "updated_at": now}
            if row is None:
                conn.execute(
                    conversation_routing.insert().values(session_key=session_key, **values)
                )
            else:
                conn.execute(
                    conversation_routing.update()
                    .where(r.session_key == session_key)
                    .values(values)
                )
            return Routing(session_key, new_team, new_priority)

        result: Routing = await self._submit(Call(self._future(), run))
        return result

    async def routings(
        self, keys: Sequence[SessionKey] | None = None
    ) -> dict[SessionKey, Routing]:
        """Team and priority of conversations (all with a row, or those of ``keys``)."""
        stmt = sa.select(conversation_routing)
        if keys is not None:
            stmt = stmt.where(conversation_routing.c.session_key.in_(list(keys)))

        def run(conn: sa.Connection) -> dict[SessionKey, Routing]:
            return {
                SessionKey(row.session_key): Routing(
                    SessionKey(row.session_key), row.team, Priority(row.priority)
                )
                for row in conn.execute(stmt)
            }

        return await self._read(run)

    # --- assignment -----------------------------------------------------------------------------

    async def assign(
        self,
        session_key: SessionKey,
        agent: str,
        *,
        expect: Sequence[SessionMode],
        default_capacity: int,
        require_online: bool,
        expect_agent: str | None = None,
    ) -> Conversation:
        """Give a session to ``agent`` (mode ``human``), within the agent's capacity.

        One transaction: lock the agent's status row, check presence and load, then
        ``UPDATE conversations ... WHERE mode IN expect`` (and ``assigned_agent =
        expect_agent`` for a transfer). The agent's ``last_assigned_at`` becomes now.

        Args:
            session_key: the conversation.
            agent: the new owner's login name (call :meth:`set_agent_status` once before, so
                the status row to lock exists).
            expect: the modes the session may be in.
            default_capacity: the capacity of an agent without one of its own.
            require_online: refuse an agent that is not ``online`` (auto-assignment).
            expect_agent: for a transfer, the current owner.

        Raises:
            bot.errors.NotFound: no such session.
            NotOnline: ``require_online`` and the agent is away or offline (or has no row).
            AtCapacity: the agent owns ``capacity`` sessions or more.
            bot.errors.Conflict: the session is not in ``expect`` (or not ``expect_agent``'s).
        """
        c = conversations.c

        def run(conn: sa.Connection, now: datetime) -> Conversation:
            status = conn.execute(
                sa.select(agent_status).where(agent_status.c.name == agent).with_for_update()
            ).one_or_none()
            if require_online and (status is None or status.presence != Presence.ONLINE.value):
                raise NotOnline(f"{agent} is not online")
            capacity = default_capacity
            if status is not None and status.capacity is not None:
                capacity = status.capacity
            load = conn.scalar(
                sa.select(sa.func.count()).where(
                    c.mode == SessionMode.HUMAN.value, c.assigned_agent == agent
                )
            )
            if int(load or 0) >= capacity:
                raise AtCapacity(
                    f"{agent} already owns {load} conversations (capacity {capacity})"
                )
            stmt = (
                conversations.update()
                .where(c.session_key == session_key, c.mode.in_([m.value for m in expect]))
                .values(mode=SessionMode.HUMAN.value, assigned_agent=agent, updated_at=now)
            )
            if expect_agent is not None:
                stmt = stmt.where(c.assigned_agent == expect_agent)
            if conn.execute(stmt).rowcount == 0:
                current = conn.execute(
                    sa.select(c.mode, c.assigned_agent).where(c.session_key == session_key)
                ).one_or_none()
                if current is None:
                    raise NotFound(f"no conversation {session_key!r}")
                raise Conflict(f"session {session_key!r} is {current.mode}, not assignable")
            conn.execute(
                agent_status.update()
                .where(agent_status.c.name == agent)
                .values(last_assigned_at=now)
            )
            row = conn.execute(sa.select(conversations).where(c.session_key == session_key)).one()
            return conversation_from_row(row)

        result: Conversation = await self._submit(Call(self._future(), run, session_key))
        return result
