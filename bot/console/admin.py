"""The console's account administration API (role ``admin``: :data:`bot.auth.Permission.MANAGE`).

- ``GET /console/api/agents`` → ``{"agents": [{"name", "display_name", "role", "active"}]}``.
- ``POST /console/api/agents`` ``{"name", "password", "display_name"?, "role"?}`` → 201
  ``{"agent"}``; 400 for a bad name, password or role, 409 when the name is taken.
- ``POST /console/api/agents/{name}`` ``{"role"?, "active"?, "display_name"?, "password"?}`` →
  ``{"agent"}``: change the role, disable or enable, rename, reset the password; 404 for an
  unknown name, 409 when it would leave no active admin.

Every call needs the session and CSRF checks of the other console calls; agents and viewers get
403. Changes are audited with the admin as actor (:func:`bot.auth.change_agent`).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bot import auth
from bot.auth import Permission
from bot.console.context import actor, agent_json, hub_of, json_body
from bot.errors import PayloadInvalid
from bot.store.base import AgentRole

log = logging.getLogger(__name__)


def _optional_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise PayloadInvalid(f"{name} must be a string", field=name)
    return value


async def list_agents(request: web.Request) -> web.StreamResponse:
    """Every account (admins only)."""
    await actor(request, Permission.MANAGE)
    accounts = await hub_of(request).store.list_agents()
    return web.json_response({"agents": [agent_json(a) for a in accounts]})


async def create_agent(request: web.Request) -> web.StreamResponse:
    """Create an account (admins only)."""
    admin = await actor(request, Permission.MANAGE)
    data = await json_body(request)
    name = _optional_str(data, "name")
    password = _optional_str(data, "password")
    if not name:
        raise PayloadInvalid("name is required", field="name")
    if not password:
        raise PayloadInvalid("password is required", field="password")
    role = auth.parse_role(data.get("role", AgentRole.AGENT.value))
    account = await auth.add_agent(
        hub_of(request).store,
        name,
        password,
        _optional_str(data, "display_name"),
        role=role,
        actor=admin.name,
    )
    log.info("console.agent_created", extra={"agent": name, "actor": admin.name})
    return web.json_response({"agent": agent_json(account)}, status=201)


async def update_agent(request: web.Request) -> web.StreamResponse:
    """Change an account's role, state, display name or password (admins only)."""
    admin = await actor(request, Permission.MANAGE)
    data = await json_body(request)
    active = data.get("active")
    if active is not None and not isinstance(active, bool):
        raise PayloadInvalid("active must be a boolean", field="active")
    role = auth.parse_role(data["role"]) if data.get("role") is not None else None
    account = await auth.change_agent(
        hub_of(request).store,
        request.match_info["name"],
        actor=admin.name,
        role=role,
        active=active,
        display_name=_optional_str(data, "display_name"),
        password=_optional_str(data, "password"),
    )
    log.info("console.agent_changed", extra={"agent": account.name, "actor": admin.name})
    return web.json_response({"agent": agent_json(account)})


ROUTES = [
    web.get("/api/agents", list_agents),
    web.post("/api/agents", create_agent),
    web.post("/api/agents/{name}", update_agent),
]
"""The routes :func:`bot.console.routes.console_app` adds."""
