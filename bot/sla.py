"""SLAs: which policy applies, the clocks of escalated conversations, and breaches.

A conversation's clock starts when it is escalated (:meth:`Sla.start`): the most specific
policy for its team and priority (team and priority set beat one of them beats neither; then by
name) gives a first-response and a resolution due time, counted in business hours when the
policy has them (:mod:`bot.business_hours`). Both are stored (``sla_timers``), so restarts keep
them. The first agent reply stops the first-response target; resolve or close stops the clock.

:meth:`Sla.sweep` records the breaches that are due (once, compare-and-set in the store),
publishes ``HubEvent("sla", session_key, data={"kind", "policy", "due", "priority"})`` (the
console's event stream and the Slack agents' channel show it), writes the audit log, and raises
the conversation's priority to the policy's ``escalate_to``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.business_hours import BusinessHours
from bot.envelope import SessionKey, utcnow
from bot.errors import PayloadInvalid
from bot.events import EventBus, HubEvent
from bot.store.base import Store
from bot.store.routing_records import Priority, Routing, SlaPolicy, SlaTimer

log = logging.getLogger(__name__)


def pick_policy(
    policies: Sequence[SlaPolicy], team: str | None, priority: Priority
) -> SlaPolicy | None:
    """The policy for a team and priority: the most specific match, then by name; or None."""
    matches = [
        p
        for p in policies
        if (p.team is None or p.team == team) and (p.priority is None or p.priority == priority)
    ]
    if not matches:
        return None
    return min(matches, key=lambda p: (-p.specificity, p.name))


def due_times(policy: SlaPolicy, start: datetime) -> tuple[datetime, datetime]:
    """First-response and resolution due times of a clock started at ``start`` (UTC)."""
    if policy.business_hours:
        hours = BusinessHours.from_json(policy.business_hours)
        return hours.add(start, policy.first_response_s), hours.add(start, policy.resolution_s)
    return (
        start + timedelta(seconds=policy.first_response_s),
        start + timedelta(seconds=policy.resolution_s),
    )


def parse_policy(data: dict[str, Any]) -> SlaPolicy:
    """An SLA policy from its API / CLI form.

    ``{"name", "first_response_s", "resolution_s", "team"?, "priority"?, "business_hours"?,
    "escalate_to"?}``; seconds are positive integers.

    Raises:
        bot.errors.PayloadInvalid: a missing or bad field (``field`` names it).
    """
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PayloadInvalid("name is required", field="name")
    seconds: dict[str, int] = {}
    for key in ("first_response_s", "resolution_s"):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise PayloadInvalid(f"{key} must be a positive integer (seconds)", field=key)
        seconds[key] = value
    team = data.get("team") or None
    if team is not None and not isinstance(team, str):
        raise PayloadInvalid("team must be a string", field="team")
    priorities: dict[str, Priority | None] = {}
    for key in ("priority", "escalate_to"):
        raw = data.get(key) or None
        try:
            priorities[key] = Priority(raw) if raw is not None else None
        except ValueError as exc:
            choices = ", ".join(p.value for p in Priority)
            raise PayloadInvalid(f"{key} must be one of {choices}", field=key) from exc
    hours = data.get("business_hours") or None
    if hours is not None:
        if not isinstance(hours, dict):
            raise PayloadInvalid("business_hours must be an object", field="business_hours")
        hours = BusinessHours.from_json(hours).to_json()
    return SlaPolicy(
        name=name.strip(),
        first_response_s=seconds["first_response_s"],
        resolution_s=seconds["resolution_s"],
        team=team,
        priority=priorities["priority"],
        business_hours=hours,
        escalate_to=priorities["escalate_to"],
    )


def policy_json(policy: SlaPolicy) -> dict[str, Any]:
    """A policy as the console API and ``switchboard sla list --json`` show it."""
    return {
        "name": policy.name,
        "team": policy.team,
        "priority": policy.priority.value if policy.priority else None,
        "first_response_s": policy.first_response_s,
        "resolution_s": policy.resolution_s,
        "business_hours": policy.business_hours,
        "escalate_to": policy.escalate_to.value if policy.escalate_to else None,
    }


def timer_json(timer: SlaTimer, now: datetime | None = None) -> dict[str, Any]:
    """A clock for the console: due times, seconds left and breaches.

    Times are ISO 8601; seconds left are whole seconds rounded down (negative: late).

    ``first_response_left_s`` is None once answered; both are None once stopped.
    """
    now = now or utcnow()
    running = timer.stopped_at is None
    answered = timer.first_response_at
    return {
        "session_key": timer.session_key,
        "policy": timer.policy,
        "started_at": timer.started_at.isoformat(),
        "first_response_due": timer.first_response_due.isoformat(),
        "resolution_due": timer.resolution_due.isoformat(),
        "first_response_at": answered.isoformat() if answered else None,
        "first_response_left_s": (
            math.floor((timer.first_response_due - now).total_seconds())
            if running and answered is None
            else None
        ),
        "resolution_left_s": (
            math.floor((timer.resolution_due - now).total_seconds()) if running else None
        ),
        "breaches": {k: v.isoformat() for k, v in timer.breaches.items()},
        "running": running,
    }


class Sla:
    """Starts, stops and sweeps SLA clocks (see the module docstring).

    Args:
        store: policies, timers, routing, audit log.
        events: where breaches are published.
    """

    def __init__(self, store: Store, events: EventBus) -> None:
        self.store = store
        self.events = events

    async def start(self, routing: Routing) -> SlaTimer | None:
        """Start the clock of a conversation just escalated; None when no policy applies."""
        policy = pick_policy(await self.store.sla_policies(), routing.team, routing.priority)
        if policy is None:
            return None
        now = utcnow()
        first, resolution = due_times(policy, now)
        timer = SlaTimer(routing.session_key, policy.name, now, first, resolution)
        await self.store.start_sla_timer(timer)
        log.info(
            "sla.started",
            extra={"session_key": routing.session_key, "policy": policy.name},
        )
        return timer

    async def responded(self, session_key: SessionKey) -> None:
        """The first agent reply: the first-response target is met (if not breached)."""
        await self.store.sla_responded(session_key)

    async def stop(self, session_key: SessionKey) -> None:
        """Resolve or close: the clock stops."""
        await self.store.stop_sla_timer(session_key)

    async def sweep(self, now: datetime | None = None) -> int:
        """Record, publish and act on the breaches that are due; how many were recorded."""
        now = now or utcnow()
        due = await self.store.due_sla_breaches(now)
        if not due:
            return 0
        policies = {p.name: p for p in await self.store.sla_policies()}
        recorded = 0
        for timer, kind in due:
            if not await self.store.record_sla_breach(timer.session_key, kind):
                continue  # another sweeper recorded it, or the clock stopped meanwhile
            recorded += 1
            key = timer.session_key
            routing = (await self.store.routings([key])).get(key)
            priority = routing.priority if routing else Priority.NORMAL
            policy = policies.get(timer.policy)
            if (
                policy is not None
                and policy.escalate_to is not None
                and policy.escalate_to.rank > priority.rank
            ):
                priority = policy.escalate_to
                await self.store.set_routing(key, keep_team=True, priority=priority)
            due_at = timer.first_response_due if kind == "first_response" else timer.resolution_due
            log.warning(
                "sla.breached",
                extra={"session_key": key, "policy": timer.policy, "kind": kind},
            )
            await self.store.audit(
                "system", "sla_breach", key, {"kind": kind, "policy": timer.policy}
            )
            self.events.publish(
                HubEvent(
                    "sla",
                    key,
                    data={
                        "kind": kind,
                        "policy": timer.policy,
                        "due": due_at.isoformat(),
                        "priority": priority.value,
                    },
                )
            )
        return recorded
