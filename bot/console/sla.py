"""The console's SLA policy API (reading: ``read``; changing: ``manage``, admins).

- ``GET /console/api/sla/policies`` → ``{"policies": [policy]}``.
- ``POST /console/api/sla/policies`` ``{"name", "first_response_s", "resolution_s", "team"?,
  "priority"?, "business_hours"?, "escalate_to"?}`` → ``{"policy"}`` (creates or replaces;
  :func:`bot.sla.parse_policy` says what is valid; 400 with ``field`` otherwise).
- ``DELETE /console/api/sla/policies/{name}`` → 204 (404 when unknown).

A conversation's clock is set when it is escalated, from the policy that applies then; the
clocks of conversations in the queue are in ``GET /console/api/routing``
(:mod:`bot.console.assignment`). Breaches arrive on the event stream as ``sla`` events.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.auth import Permission
from bot.console.context import actor, hub_of, json_body
from bot.errors import PayloadInvalid
from bot.sla import parse_policy, policy_json

log = logging.getLogger(__name__)


async def list_policies(request: web.Request) -> web.StreamResponse:
    """Every SLA policy."""
    await actor(request, Permission.READ)
    policies = await hub_of(request).store.sla_policies()
    return web.json_response({"policies": [policy_json(p) for p in policies]})


async def save_policy(request: web.Request) -> web.StreamResponse:
    """Create or replace a policy (admins)."""
    admin = await actor(request, Permission.MANAGE)
    hub = hub_of(request)
    policy = parse_policy(await json_body(request))
    if policy.team is not None and policy.team not in {t.name for t in await hub.store.teams()}:
        raise PayloadInvalid(f"no team {policy.team!r}", field="team")
    await hub.store.save_sla_policy(policy)
    await hub.store.audit(admin.name, "sla_policy_save", None, {"policy": policy.name})
    log.info("console.sla_policy_saved", extra={"policy": policy.name, "actor": admin.name})
    return web.json_response({"policy": policy_json(policy)})


async def delete_policy(request: web.Request) -> web.StreamResponse:
    """Delete a policy (admins); running clocks keep their due times."""
    admin = await actor(request, Permission.MANAGE)
    hub = hub_of(request)
    name = request.match_info["name"]
    await hub.store.delete_sla_policy(name)
    await hub.store.audit(admin.name, "sla_policy_delete", None, {"policy": name})
    return web.Response(status=204)


ROUTES = [
    web.get("/api/sla/policies", list_policies),
    web.post("/api/sla/policies", save_policy),
    web.delete("/api/sla/policies/{name}", delete_policy),
]
"""The routes :func:`bot.console.routes.console_app` adds."""
