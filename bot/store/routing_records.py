"""Records of assignment and SLAs: teams, agent presence, conversation routing, SLA timers.

Kept apart from :mod:`bot.store.base` (which re-exports nothing of it) so that the store's
protocol stays readable; the :class:`~bot.store.base.Store` methods that read and write these
records are documented there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from bot.envelope import SessionKey

BreachKind = Literal["first_response", "resolution"]
"""Which SLA target a breach missed."""


class Presence(StrEnum):
    """Whether a human agent takes new conversations.

    ``online``: auto-assignment may give them conversations; ``away``: logged in, keeps what
    they own, gets nothing new; ``offline``: not in the console (set by the agent, by logging
    out, or when the console session has been gone for ``presence_timeout_s`` seconds).
    """

    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


class Priority(StrEnum):
    """A conversation's priority (SLA policies and the queue's order use it)."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        """0 for ``low`` up to 3 for ``urgent``."""
        return list(Priority).index(self)


@dataclass(frozen=True, slots=True)
class Team:
    """An inbox of human agents: the conversations of some channels or topics.

    Attributes:
        name: unique identifier (``billing``).
        display_name: shown in the console.
        channels: channel plugin names whose escalations go to this team (``email``).
        topics: escalation reasons or conversation topics (``meta["topic"]``) that go to it;
            a topic match wins over a channel match.
        members: login names of the agents in the team.
    """

    name: str
    display_name: str
    channels: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """One agent's presence, capacity and load.

    Attributes:
        name: login name.
        presence: online, away or offline.
        capacity: most conversations owned at once; None uses ``settings.agent_capacity``.
        load: conversations the agent owns now (mode ``human``).
        seen_at: the last sign of a console session (login, event-stream heartbeat).
        last_assigned_at: the last assignment (round-robin among equally loaded agents).
    """

    name: str
    presence: Presence = Presence.OFFLINE
    capacity: int | None = None
    load: int = 0
    seen_at: datetime | None = None
    last_assigned_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    """Where a conversation waits: its team (None: any agent) and its priority."""

    session_key: SessionKey
    team: str | None
    priority: Priority = Priority.NORMAL


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """Targets for one team and priority (None matches any).

    Attributes:
        name: unique identifier.
        team: the team it applies to, None for every team (and conversations without one).
        priority: the priority it applies to, None for every priority.
        first_response_s: seconds (business seconds when ``business_hours`` is set) from
            escalation to the first agent reply.
        resolution_s: seconds (idem) from escalation to resolve or close.
        business_hours: :meth:`bot.business_hours.BusinessHours.from_json` data, or None
            for round-the-clock targets.
        escalate_to: on a breach, raise the conversation's priority to this one (None: keep).
    """

    name: str
    first_response_s: int
    resolution_s: int
    team: str | None = None
    priority: Priority | None = None
    business_hours: dict[str, Any] | None = None
    escalate_to: Priority | None = None

    @property
    def specificity(self) -> int:
        """How narrow the policy is: team and priority set beat one of them beats neither."""
        return (2 if self.team is not None else 0) + (1 if self.priority is not None else 0)


@dataclass(frozen=True, slots=True)
class SlaTimer:
    """A conversation's SLA clock, as stored (UTC datetimes).

    Attributes:
        session_key: the conversation.
        policy: the policy's name.
        started_at: the escalation.
        first_response_due: when the first agent reply is due.
        resolution_due: when resolution is due.
        first_response_at: the first agent reply, None until then.
        stopped_at: resolve or close, None while running.
        breaches: ``{"first_response" | "resolution": breach time}``.
    """

    session_key: SessionKey
    policy: str
    started_at: datetime
    first_response_due: datetime
    resolution_due: datetime
    first_response_at: datetime | None = None
    stopped_at: datetime | None = None
    breaches: dict[str, datetime] = field(default_factory=dict)
