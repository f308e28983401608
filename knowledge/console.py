"""The console's Knowledge page API: ingest with progress and curated answers, for admins.

The console loads :func:`setup` through the ``switchboard.console`` entry point (``bot.console``
cannot import this package). The routes are :class:`knowledge.http.KnowledgeRoutes`, the ones of
the admin REST API, under ``/console/api/knowledge`` and behind the console's own door: the
session cookie, the ``X-Switchboard-CSRF`` header on every change, and the role ``admin``
(:data:`bot.auth.Permission.MANAGE`; agents and viewers get 403). Changes are audited with the
admin's login name as actor (:mod:`knowledge.admin`). The page is
``bot/console/static/knowledge.js``.
"""

from __future__ import annotations

from aiohttp import web

from bot.auth import Permission
from bot.console.context import ConsoleHub, actor
from knowledge.admin import Caller, KnowledgeAdmin
from knowledge.http import KnowledgeRoutes

#: Where the routes are, as the console application sees them (it is mounted at ``/console``).
PREFIX = "/api/knowledge"


async def _admin(request: web.Request) -> Caller:
    account = await actor(request, Permission.MANAGE)
    return Caller(actor=account.name, author=account.name)


def setup(app: web.Application, hub: ConsoleHub) -> KnowledgeRoutes:
    """Add the Knowledge page's routes to the console application ``app`` (not yet mounted).

    Args:
        app: the console sub-application (:func:`bot.console.routes.console_app`).
        hub: the hub it serves; its ``retriever`` is the knowledge base (without one, ingest
            and counts answer 503; curated answers still work).

    Returns:
        The routes' handlers.
    """
    admin = KnowledgeAdmin.of(hub)
    routes = KnowledgeRoutes(
        admin,
        _admin,
        location=f"/console{PREFIX}",
        max_body_bytes=hub.settings.max_body_bytes,
    )
    app.add_routes(routes.table(PREFIX))
    app.on_shutdown.append(admin.close)
    return routes
