"""What the fake ticket systems share (aiohttp on 127.0.0.1, port 0): serving, Basic auth,
recording every request, scripted failures.

:class:`~tests.fakes.zendesk_api.FakeZendesk` and :class:`~tests.fakes.jira_api.FakeJira`
follow the products' documented wire formats closely enough for the real SDKs (``zenpy``,
``jira``) pointed at them by base URL. Each records every request
(:attr:`FakeTicketSystem.requests`) and can be scripted to fail
(:meth:`FakeTicketSystem.fail_next`: a 429 with ``Retry-After``, a 503;
:attr:`FakeTicketSystem.down`: every request 503).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

from aiohttp import web
from aiohttp.typedefs import Handler


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request: method, path, query, JSON body (None when absent) and headers."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str] = field(repr=False)


def now_iso() -> str:
    """The current UTC time as Zendesk writes it (``2026-12-06T10:00:00Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeTicketSystem:
    """Shared machinery: serving, auth, recording, scripted failures.

    Attributes:
        requests: every request, in order (also those refused).
        down: answer every request 503 (the product is down).
        token: the credential accepted.
    """

    def __init__(self, *, email: str, token: str) -> None:
        self.email = email
        self.token = token
        self.requests: list[Recorded] = []
        self.down = False
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def _basic(self) -> str:
        raise NotImplementedError

    def routes(self) -> list[web.RouteDef]:
        """The product's routes."""
        raise NotImplementedError

    def fail_next(self, status: int, *, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After``)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self._failures += [(status, headers)] * times

    def calls(self, method: str, path_prefix: str) -> list[Recorded]:
        """Recorded requests with this method whose path starts with ``path_prefix``."""
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(
            Recorded(
                request.method, request.path, dict(request.query), body, dict(request.headers)
            )
        )
        if self.down:
            return web.json_response({"error": "Service Unavailable"}, status=503)
        if self._failures:
            status, headers = self._failures.pop(0)
            return web.json_response({"error": "scripted"}, status=status, headers=headers)
        if request.headers.get("Authorization") != self._basic():
            return web.json_response({"error": "Couldn't authenticate you"}, status=401)
        return await handler(request)

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
