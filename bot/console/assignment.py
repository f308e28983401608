"""The console's assignment API: teams, presence, capacity, transfer, and queue annotations.

- ``GET /console/api/teams`` (read) → ``{"teams": [{"name", "display_name", "channels",
  "topics", "members"}]}``.
- ``POST /console/api/teams`` (manage) ``{"name", "display_name"?, "channels"?, "topics"?,
  "members"?}`` → 201 ``{"team"}``; 409 when the name is taken.
- ``POST /console/api/teams/{name}`` (manage) with the same optional fields → ``{"team"}``;
  ``DELETE /console/api/teams/{name}`` (manage) → 204. 404 for an unknown team.
- ``GET /console/api/presence`` (read) → ``{"agents": [{"name", "display_name", "presence",
  "capacity", "load", "teams"}], "default_capacity"}`` (``capacity`` already resolved).
- ``POST /console/api/presence`` (act) ``{"presence": "online"|"away"|"offline"}``: one's own.
- ``POST /console/api/presence/{name}`` (manage) ``{"presence"?, "capacity"?: int | null}``:
  another agent's presence, or capacity (null: back to ``agent_capacity``).
- ``POST /console/api/conversations/{key}/transfer`` (act) ``{"agent"}`` or ``{"team"}``
  (``""``: the general queue) → ``{"conversation"}``; the owner or an admin.
- ``GET /console/api/routing`` (read) → ``{"routing": {key: {"team", "priority"}}, "sla":
  {key: timer}}`` for the conversations in the queue (timer: :func:`bot.sla.timer_json`).

Errors as the rest of the console: 400 bad field, 403 role, 404, 409 (capacity, state).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bot.assignment import checked_team
from bot.auth import Permission
from bot.console.context import actor, hub_of, json_body
from bot.console.views import conversation_json
from bot.envelope import SessionKey
from bot.errors import Conflict, NotFound, PayloadInvalid
from bot.sla import timer_json
from bot.store.routing_records import Presence, Team

log = logging.getLogger(__name__)

MAX_CAPACITY = 100
"""The largest per-agent capacity the API accepts."""


def team_json(team: Team) -> dict[str, Any]:
    """A team as the API shows it."""
    return {
        "name": team.name,
        "display_name": team.display_name,
        "channels": list(team.channels),
        "topics": list(team.topics),
        "members": list(team.members),
    }


def _str_list(data: dict[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PayloadInvalid(f"{name} must be a list of strings", field=name)
    return tuple(value)


async def _team_from(request: web.Request, data: dict[str, Any], old: Team | None) -> Team:
    name = old.name if old is not None else data.get("name")
    if not isinstance(name, str):
        raise PayloadInvalid("name is required", field="name")
    display = data.get("display_name")
    if display is not None and not isinstance(display, str):
        raise PayloadInvalid("display_name must be a string", field="display_name")
    team = Team(
        name=name,
        display_name=display or (old.display_name if old else name),
        channels=_str_list(data, "channels", old.channels if old else ()),
        topics=_str_list(data, "topics", old.topics if old else ()),
        members=_str_list(data, "members", old.members if old else ()),
    )
    known = {a.name for a in await hub_of(request).store.list_agents()}
    return checked_team(team, known)


async def _team(request: web.Request) -> Team:
    name = request.match_info["name"]
    found = next((t for t in await hub_of(request).store.teams() if t.name == name), None)
    if found is None:
        raise NotFound(f"no team {name!r}")
    return found


async def list_teams(request: web.Request) -> web.StreamResponse:
    """Every team with its members."""
    await actor(request, Permission.READ)
    teams = await hub_of(request).store.teams()
    return web.json_response({"teams": [team_json(t) for t in teams]})


async def create_team(request: web.Request) -> web.StreamResponse:
    """Create a team (admins)."""
    admin = await actor(request, Permission.MANAGE)
    hub = hub_of(request)
    team = await _team_from(request, await json_body(request), None)
    if any(t.name == team.name for t in await hub.store.teams()):
        raise Conflict(f"team {team.name!r} exists")
    await hub.store.save_team(team)
    await hub.store.audit(admin.name, "team_create", None, {"team": team.name})
    log.info("console.team_created", extra={"team": team.name, "actor": admin.name})
    await hub.handoff.assignment.drain()
    return web.json_response({"team": team_json(team)}, status=201)


async def update_team(request: web.Request) -> web.StreamResponse:
    """Change a team's display name, channels, topics or members (admins)."""
    admin = await actor(request, Permission.MANAGE)
    hub = hub_of(request)
    team = await _team_from(request, await json_body(request), await _team(request))
    await hub.store.save_team(team)
    await hub.store.audit(admin.name, "team_update", None, {"team": team.name})
    await hub.handoff.assignment.drain()
    return web.json_response({"team": team_json(team)})


async def delete_team(request: web.Request) -> web.StreamResponse:
    """Delete a team (admins); its waiting conversations join the general queue."""
    admin = await actor(request, Permission.MANAGE)
    hub = hub_of(request)
    team = await _team(request)
    await hub.store.delete_team(team.name)
    await hub.store.audit(admin.name, "team_delete", None, {"team": team.name})
    await hub.handoff.assignment.drain()
    return web.Response(status=204)


async def presence(request: web.Request) -> web.StreamResponse:
    """Presence, capacity, load and teams of every active agent and viewer."""
    await actor(request, Permission.READ)
    hub = hub_of(request)
    statuses = {s.name: s for s in await hub.store.agent_statuses()}
    teams = await hub.store.teams()
    default = hub.settings.agent_capacity
    agents = []
    for account in await hub.store.list_agents():
        if not account.active:
            continue
        status = statuses.get(account.name)
        agents.append(
            {
                "name": account.name,
                "display_name": account.display_name,
                "role": account.role.value,
                "presence": status.presence.value if status else Presence.OFFLINE.value,
                "capacity": status.capacity if status and status.capacity is not None else default,
                "load": status.load if status else 0,
                "teams": [t.name for t in teams if account.name in t.members],
            }
        )
    return web.json_response({"agents": agents, "default_capacity": default})


def _presence(data: dict[str, Any]) -> Presence | None:
    raw = data.get("presence")
    if raw is None:
        return None
    try:
        return Presence(raw)
    except ValueError as exc:
        raise PayloadInvalid("presence must be online, away or offline", field="presence") from exc


async def set_own_presence(request: web.Request) -> web.StreamResponse:
    """The logged-in agent sets its own presence (agents and admins)."""
    account = await actor(request, Permission.ACT)
    value = _presence(await json_body(request))
    if value is None:
        raise PayloadInvalid("presence is required", field="presence")
    await hub_of(request).handoff.assignment.set_presence(account.name, value, actor=account.name)
    return web.json_response({"presence": value.value})


async def set_agent_presence(request: web.Request) -> web.StreamResponse:
    """An admin sets another agent's presence or capacity."""
    admin = await actor(request, Permission.MANAGE)
    hub = hub_of(request)
    name = request.match_info["name"]
    if await hub.store.agent(name) is None:
        raise NotFound(f"no agent {name!r}")
    data = await json_body(request)
    value = _presence(data)
    assignment = hub.handoff.assignment
    if "capacity" in data:
        capacity = data["capacity"]
        if capacity is not None and (
            not isinstance(capacity, int)
            or isinstance(capacity, bool)
            or not 0 <= capacity <= MAX_CAPACITY
        ):
            raise PayloadInvalid(
                f"capacity must be an integer from 0 to {MAX_CAPACITY}, or null", field="capacity"
            )
        await assignment.set_capacity(name, capacity, actor=admin.name)
    if value is not None:
        await assignment.set_presence(name, value, actor=admin.name)
    return web.json_response({"agent": name})


async def transfer(request: web.Request) -> web.StreamResponse:
    """Transfer an owned conversation to an agent or a team's queue."""
    account = await actor(request, Permission.ACT)
    data = await json_body(request)
    to_agent, to_team = data.get("agent"), data.get("team")
    for name, value in (("agent", to_agent), ("team", to_team)):
        if value is not None and not isinstance(value, str):
            raise PayloadInvalid(f"{name} must be a string", field=name)
    conv = await hub_of(request).handoff.assignment.transfer(
        SessionKey(request.match_info["session_key"]),
        account,
        to_agent=to_agent,
        to_team=to_team,
    )
    return web.json_response({"conversation": conversation_json(conv)})


async def routing(request: web.Request) -> web.StreamResponse:
    """Team, priority and SLA clock of the conversations in the queue."""
    await actor(request, Permission.READ)
    hub = hub_of(request)
    keys = [c.session_key for c in await hub.handoff.queue()]
    routings = await hub.store.routings(keys) if keys else {}
    timers = await hub.store.sla_timers(keys) if keys else []
    return web.json_response(
        {
            "routing": {
                k: {"team": r.team, "priority": r.priority.value} for k, r in routings.items()
            },
            "sla": {t.session_key: timer_json(t) for t in timers},
        }
    )


ROUTES = [
    web.get("/api/teams", list_teams),
    web.post("/api/teams", create_team),
    web.post("/api/teams/{name}", update_team),
    web.delete("/api/teams/{name}", delete_team),
    web.get("/api/presence", presence),
    web.post("/api/presence", set_own_presence),
    web.post("/api/presence/{name}", set_agent_presence),
    web.post("/api/conversations/{session_key:.+}/transfer", transfer),
    web.get("/api/routing", routing),
]
"""The routes :func:`bot.console.routes.console_app` adds."""
