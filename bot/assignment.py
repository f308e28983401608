"""Assignment: teams, agent presence and capacity, and who gets a new escalation.

- **Teams** are inboxes: an escalated conversation joins the queue of the first team (by name)
  whose ``topics`` hold its escalation reason or ``meta["topic"]``, else of the first whose
  ``channels`` hold its channel, else the general queue (any agent).
- **Presence**: ``online`` agents get new conversations, ``away`` ones keep theirs, ``offline``
  ones are out (logging out, or no console session for ``presence_timeout_s`` seconds).
- **Capacity**: an agent owns at most its ``capacity`` (default ``settings.agent_capacity``)
  conversations at once, whether assigned, claimed or transferred.

A new escalation goes to the least-loaded online agent of its team with room left, the one
assigned longest ago first among equals (round-robin); with none, it waits in the team queue
and :meth:`Assignment.drain` (called when an agent resolves, comes online or gets more
capacity, and by the sweeper every few seconds) hands it out later, highest priority and
longest waiting first. Every assignment is :meth:`bot.store.base.Store.assign`: one
transaction that checks capacity and compare-and-sets the session's mode, so two processes
never assign one conversation twice nor overfill an agent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta

from bot.config import Settings
from bot.envelope import SessionKey, utcnow
from bot.errors import Conflict, Forbidden, NotFound, PayloadInvalid
from bot.events import EventBus, HubEvent, mode_event
from bot.sla import Sla
from bot.store.assignment import AtCapacity, NotOnline
from bot.store.base import AgentAccount, AgentRole, Conversation, SessionMode, Store
from bot.store.routing_records import AgentStatus, Presence, Priority, Routing, Team

log = logging.getLogger(__name__)

AnnounceFn = Callable[[Conversation, str, str], Awaitable[None]]
"""``announce(conversation, agent_name, how)`` after an assignment (``how``: ``auto``,
``transfer``): publish, audit and tell the customer (the handoff's job)."""

_EPOCH = datetime.min.replace(tzinfo=utcnow().tzinfo)


_TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def checked_team(team: Team, agents: Collection[str]) -> Team:
    """``team`` with names trimmed and duplicates dropped, after checking it.

    Args:
        team: the team as given (console or CLI).
        agents: every agent's login name.

    Raises:
        bot.errors.PayloadInvalid: a bad name (1-64 of ``a-z 0-9 . _ -``), an empty channel or
            topic, or an unknown member (``field`` names it).
    """
    if not _TEAM_NAME.match(team.name):
        raise PayloadInvalid(
            "name must be 1-64 lower-case letters, digits, '.', '_' or '-'", field="name"
        )
    lists: dict[str, tuple[str, ...]] = {}
    for field, values in (
        ("channels", team.channels),
        ("topics", team.topics),
        ("members", team.members),
    ):
        if not all(v.strip() for v in values):
            raise PayloadInvalid(f"{field} must be non-empty strings", field=field)
        lists[field] = tuple(dict.fromkeys(v.strip() for v in values))
    unknown = [m for m in lists["members"] if m not in agents]
    if unknown:
        raise PayloadInvalid(f"no agent {unknown[0]!r}", field="members")
    return Team(
        team.name,
        team.display_name.strip() or team.name,
        lists["channels"],
        lists["topics"],
        lists["members"],
    )


def team_for(conv: Conversation, teams: Sequence[Team]) -> str | None:
    """The team whose queue an escalated conversation joins (see the module docstring)."""
    topic = conv.meta.get("topic")
    for team in teams:
        if conv.escalation_reason in team.topics or (topic and topic in team.topics):
            return team.name
    for team in teams:
        if conv.channel in team.channels:
            return team.name
    return None


def rank_candidates(
    statuses: Sequence[AgentStatus],
    members: Sequence[str] | None,
    default_capacity: int,
) -> list[AgentStatus]:
    """Online agents with room left, least loaded first, then assigned longest ago, then name.

    Args:
        statuses: every agent's status.
        members: the team's agents, None for the general queue (every agent).
        default_capacity: capacity of agents without their own.
    """
    ranked = [
        s
        for s in statuses
        if s.presence is Presence.ONLINE
        and (members is None or s.name in members)
        and s.load < (s.capacity if s.capacity is not None else default_capacity)
    ]
    ranked.sort(key=lambda s: (s.load, s.last_assigned_at or _EPOCH, s.name))
    return ranked


class Assignment:
    """Assigns escalations to agents (see the module docstring).

    Args:
        settings: ``agent_capacity``, ``auto_assign``, ``presence_timeout_s``.
        store: conversations, teams, presence, routing, SLA timers, audit log.
        events: ``mode`` and ``presence`` events are published there.
        announce: called after each automatic assignment or transfer.
    """

    def __init__(
        self, settings: Settings, store: Store, events: EventBus, announce: AnnounceFn
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.sla = Sla(store, events)
        self._announce = announce
        self._drain_lock = asyncio.Lock()
        self._drain_again = False

    # --- escalation -----------------------------------------------------------------------------

    async def route(
        self, conv: Conversation, priority: Priority = Priority.NORMAL
    ) -> Conversation:
        """Put a conversation just queued in its team's queue, start its SLA clock, assign it.

        Returns:
            The conversation as it is now: ``human`` when an agent got it, else ``queued``.
        """
        teams = await self.store.teams()
        routing = await self.store.set_routing(
            conv.session_key, team=team_for(conv, teams), priority=priority
        )
        await self.sla.start(routing)
        if not self.settings.auto_assign:
            return conv
        pool = await self._pool()
        return await self._assign_one(conv, routing, pool, teams) or conv

    async def _pool(self) -> dict[str, AgentStatus]:
        """Statuses of the agents who may be given conversations: active, not viewers."""
        accounts = {
            a.name
            for a in await self.store.list_agents()
            if a.active and a.role is not AgentRole.VIEWER
        }
        return {s.name: s for s in await self.store.agent_statuses() if s.name in accounts}

    async def _assign_one(
        self,
        conv: Conversation,
        routing: Routing,
        pool: dict[str, AgentStatus],
        teams: Sequence[Team],
    ) -> Conversation | None:
        """Try the candidates in order; the assigned conversation, or None (it keeps waiting).

        ``pool`` is updated as it goes (one more load for the agent who got it; an agent found
        full or gone is dropped), so one pass over the queue reads the statuses once.
        """
        members: Sequence[str] | None = None
        if routing.team is not None:
            team = next((t for t in teams if t.name == routing.team), None)
            members = team.members if team is not None else None
        capacity = self.settings.agent_capacity
        for candidate in rank_candidates(list(pool.values()), members, capacity):
            try:
                assigned = await self.store.assign(
                    conv.session_key,
                    candidate.name,
                    expect=[SessionMode.QUEUED],
                    default_capacity=capacity,
                    require_online=True,
                )
            except (AtCapacity, NotOnline):
                pool.pop(candidate.name, None)  # filled by another process, or gone away
                continue
            except Conflict:
                return None  # claimed, resolved or assigned by someone else meanwhile
            pool[candidate.name] = dataclasses.replace(
                candidate, load=candidate.load + 1, last_assigned_at=utcnow()
            )
            log.info(
                "assignment.assigned",
                extra={
                    "session_key": conv.session_key,
                    "agent": candidate.name,
                    "team": routing.team,
                },
            )
            await self._announce(assigned, candidate.name, "auto")
            return assigned
        return None

    async def drain(self) -> int:
        """Hand out waiting conversations to online agents with room; how many were assigned.

        Highest priority first, then longest waiting. Calls made while one runs are folded
        into one more pass.
        """
        if not self.settings.auto_assign:
            return 0
        if self._drain_lock.locked():
            self._drain_again = True
            return 0
        assigned = 0
        async with self._drain_lock:
            self._drain_again = True
            while self._drain_again:
                self._drain_again = False
                assigned += await self._drain_pass()
        return assigned

    async def _drain_pass(self) -> int:
        queued = await self.store.conversations(modes=[SessionMode.QUEUED], limit=10_000)
        if not queued:
            return 0
        routings = await self.store.routings([c.session_key for c in queued])
        far = datetime.max.replace(tzinfo=_EPOCH.tzinfo)

        def order(c: Conversation) -> tuple[int, datetime]:
            routing = routings.get(c.session_key)
            rank = routing.priority.rank if routing else Priority.NORMAL.rank
            return (-rank, c.queued_at or far)

        assigned = 0
        pool = await self._pool()
        teams = await self.store.teams()
        for conv in sorted(queued, key=order):
            if not rank_candidates(list(pool.values()), None, self.settings.agent_capacity):
                break  # nobody online has room: the rest keeps waiting
            routing = routings.get(conv.session_key) or Routing(conv.session_key, None)
            if await self._assign_one(conv, routing, pool, teams) is not None:
                assigned += 1
        return assigned

    # --- agents' actions ------------------------------------------------------------------------

    async def claim(
        self, session_key: SessionKey, agent: str, current: SessionMode
    ) -> Conversation:
        """Make ``agent`` the owner (a manual claim), within its capacity.

        Raises:
            AtCapacity: the agent owns its capacity already.
            bot.errors.Conflict: the session changed meanwhile.
        """
        await self.store.set_agent_status(agent)  # the row to lock
        return await self.store.assign(
            session_key,
            agent,
            expect=[current],
            default_capacity=self.settings.agent_capacity,
            require_online=False,
        )

    async def transfer(
        self,
        session_key: SessionKey,
        actor: AgentAccount,
        *,
        to_agent: str | None = None,
        to_team: str | None = None,
    ) -> Conversation:
        """Give an owned conversation to another agent, or back to a team's queue.

        The owner or an admin may transfer. To an agent: within the target's capacity, any
        presence but offline. To a team (``to_team``; ``""`` for the general queue): the
        conversation is queued there and auto-assigned when someone has room.

        Raises:
            bot.errors.PayloadInvalid: neither or both targets.
            bot.errors.NotFound: unknown session, agent or team.
            bot.errors.Forbidden: the actor neither owns it nor is an admin.
            AtCapacity: the target agent is full; bot.errors.Conflict: not owned by anyone,
                the target is offline, or it changed meanwhile.
        """
        if (to_agent is None) == (to_team is None):
            raise PayloadInvalid("give either agent or team", field="agent")
        conv = await self.store.conversation(session_key)
        if conv is None:
            raise NotFound(f"no conversation {session_key!r}")
        if conv.mode is not SessionMode.HUMAN or conv.assigned_agent is None:
            raise Conflict("only a conversation an agent owns can be transferred")
        if conv.assigned_agent != actor.name and actor.role is not AgentRole.ADMIN:
            raise Forbidden(f"{conv.assigned_agent} owns this conversation")
        owner = conv.assigned_agent
        if to_agent is not None:
            target = await self.store.agent(to_agent)
            if target is None or not target.active:
                raise NotFound(f"no active agent {to_agent!r}")
            statuses = {s.name: s for s in await self.store.agent_statuses()}
            status = statuses.get(to_agent)
            if status is None or status.presence is Presence.OFFLINE:
                raise Conflict(f"{to_agent} is offline")
            conv = await self.store.assign(
                session_key,
                to_agent,
                expect=[SessionMode.HUMAN],
                expect_agent=owner,
                default_capacity=self.settings.agent_capacity,
                require_online=False,
            )
            await self.store.audit(actor.name, "transfer", session_key, {"to_agent": to_agent})
            await self._announce(conv, to_agent, "transfer")
        else:
            team = to_team or None
            if team is not None and team not in {t.name for t in await self.store.teams()}:
                raise NotFound(f"no team {team!r}")
            conv = await self.store.set_mode(
                session_key,
                SessionMode.QUEUED,
                expect=[SessionMode.HUMAN],
                reason=conv.escalation_reason,
            )
            await self.store.set_routing(session_key, team=team)
            await self.store.audit(actor.name, "transfer", session_key, {"to_team": team})
            self.events.publish(mode_event(conv))
        await self.drain()  # the old owner has room again; a team transfer is handed out
        return await self.store.conversation(session_key) or conv

    async def released(self, session_key: SessionKey) -> None:
        """A conversation was resolved or closed: stop its clock, give the room to the queue."""
        await self.sla.stop(session_key)
        await self.drain()

    # --- presence and capacity ------------------------------------------------------------------

    async def set_presence(self, name: str, presence: Presence, *, actor: str) -> None:
        """Set an agent's presence (``online`` hands out waiting conversations at once)."""
        await self.store.set_agent_status(name, presence=presence, seen=True)
        await self.store.audit(actor, "presence", None, {"agent": name, "presence": presence})
        self._publish_presence(name, presence)
        log.info("assignment.presence", extra={"agent": name, "presence": presence.value})
        if presence is Presence.ONLINE:
            await self.drain()

    async def set_capacity(self, name: str, capacity: int | None, *, actor: str) -> None:
        """Set an agent's capacity (None: back to ``settings.agent_capacity``)."""
        await self.store.set_agent_status(name, capacity=capacity, clear_capacity=capacity is None)
        await self.store.audit(actor, "capacity", None, {"agent": name, "capacity": capacity})
        self._publish_presence(name, None)
        await self.drain()

    async def seen(self, names: Sequence[str]) -> None:
        """These agents have a console session open now (see ``presence_timeout_s``)."""
        await self.store.touch_agents(names)

    async def expire_presence(self) -> list[str]:
        """Agents whose console session has been gone ``presence_timeout_s`` go offline."""
        cutoff = utcnow() - timedelta(seconds=self.settings.presence_timeout_s)
        gone = await self.store.expire_presence(cutoff)
        for name in gone:
            log.info("assignment.presence_expired", extra={"agent": name})
            self._publish_presence(name, Presence.OFFLINE)
        return gone

    def _publish_presence(self, name: str, presence: Presence | None) -> None:
        data = {"agent": name, "presence": presence.value if presence else None}
        self.events.publish(HubEvent("presence", SessionKey(""), data=data))
