"""The web surface's browser defences through the real application (``make_app``).

Security headers on every kind of answer, HSTS and Secure cookies only over HTTPS (public_url
or a trusted proxy's X-Forwarded-Proto), the console's CSRF checks (token and origin), API-key
requests exempt, and no inline script or style left in the pages the CSP protects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher
from pydantic import SecretStr

from bot import auth
from bot.channel import ChannelPlugin
from channels.memory.pytest_plugin import ScriptedAgent, make_settings, started_hub
from channels.rest.plugin import RestChannel
from channels.webchat.plugin import WebchatChannel
from tests.channels.support import serve

Client = TestClient[web.Request, web.Application]
PASSWORD = "correct horse battery"
DOCS = Path(__file__).resolve().parents[1] / "docs"
Served = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Served:
    """``served(**settings)``: a started hub with REST, web chat, console and docs, served."""
    from bot.server import make_app

    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))

    opened = [0]

    @asynccontextmanager
    async def open_client(**overrides: Any) -> AsyncIterator[Client]:
        values: dict[str, Any] = {"sample_kb": True, "sample_kb_dir": DOCS, **overrides}
        opened[0] += 1
        settings = make_settings(tmp_path / f"data{opened[0]}", **values)
        channels: list[ChannelPlugin] = [RestChannel(settings), WebchatChannel(settings)]
        async with started_hub(settings, agent=ScriptedAgent(), channels=channels) as hub:
            await auth.add_agent(hub.store, "alice", PASSWORD, "Alice")
            async with serve(make_app(hub)) as client:
                yield client

    return open_client


async def login(client: Client, **headers: str) -> Any:
    return await client.post(
        "/console/api/login", json={"name": "alice", "password": PASSWORD}, headers=headers
    )


def directives(csp: str) -> dict[str, str]:
    return {d.split()[0]: d.partition(" ")[2] for d in (p.strip() for p in csp.split(";")) if d}


# --- headers -------------------------------------------------------------------------------------
async def test_every_answer_carries_the_security_headers(served: Served) -> None:
    async with served() as client:
        for path, status in [
            ("/healthz", 200),
            ("/api/v1/openapi.json", 200),
            ("/nope", 404),
            ("/console/", 200),
            ("/console/api/me", 401),
            ("/", 200),
            ("/docs/quickstart", 200),
            ("/webchat/widget.js", 200),
        ]:
            resp = await client.get(path)
            assert resp.status == status, path
            csp = resp.headers["Content-Security-Policy"]
            assert "unsafe-inline" not in csp, path
            assert "unsafe-eval" not in csp, path
            assert "frame-ancestors" in directives(csp), path
            assert resp.headers["X-Content-Type-Options"] == "nosniff", path
            assert "Referrer-Policy" in resp.headers, path
            assert "camera=()" in resp.headers["Permissions-Policy"], path
            assert "Strict-Transport-Security" not in resp.headers, path  # plain HTTP here


async def test_framing_console_never_embed_page_by_setting(served: Served) -> None:
    async with served() as client:
        console = directives((await client.get("/console/")).headers["Content-Security-Policy"])
        assert console["frame-ancestors"] == "'none'"
        assert console["script-src"] == "'self'"
        assert console["style-src"] == "'self'"
        assert (await client.get("/console/")).headers["X-Frame-Options"] == "DENY"
        page = await client.get("/")
        demo = directives(page.headers["Content-Security-Policy"])
        assert demo["frame-ancestors"] == "'self'"
        assert "X-Frame-Options" not in page.headers
        api = directives((await client.get("/healthz")).headers["Content-Security-Policy"])
        assert api["default-src"] == "'none'"
    async with served(webchat_frame_ancestors="https://shop.example, https://help.example") as c:
        demo = directives((await c.get("/")).headers["Content-Security-Policy"])
        assert demo["frame-ancestors"] == "https://shop.example https://help.example"
        console = directives((await c.get("/console/")).headers["Content-Security-Policy"])
        assert console["frame-ancestors"] == "'none'"


async def test_stylesheets_are_files(served: Served) -> None:
    async with served() as client:
        for path in ("/webchat/widget.css", "/webchat/demo.css", "/docs/_static/docs.css"):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert resp.content_type == "text/css", path
            assert "{" in await resp.text(), path
        page = await (await client.get("/docs/quickstart")).text()
        assert '<link rel="stylesheet" href="/docs/_static/docs.css">' in page
        assert "<style" not in page


# --- HTTPS: HSTS and Secure cookies -------------------------------------------------------------
async def test_plain_http_cookie_is_httponly_samesite_not_secure(served: Served) -> None:
    async with served() as client:
        resp = await login(client)
        assert resp.status == 200
        cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Secure" not in cookie


async def test_https_public_url_sends_hsts_and_secure_cookies(served: Served) -> None:
    async with served(public_url="https://hub.example") as client:
        assert (await client.get("/healthz")).headers["Strict-Transport-Security"] == (
            "max-age=31536000"
        )
        resp = await login(client, Origin="https://hub.example")
        assert resp.status == 200
        assert "Secure" in resp.headers["Set-Cookie"]
        assert "HttpOnly" in resp.headers["Set-Cookie"]


async def test_forwarded_proto_counts_only_from_a_trusted_proxy(served: Served) -> None:
    https = {"X-Forwarded-Proto": "https"}
    async with served(trusted_proxies="127.0.0.1") as client:  # the test client's address
        resp = await client.get("/healthz", headers=https)
        assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
        resp = await login(client, **https)
        assert resp.status == 200
        assert "Secure" in resp.headers["Set-Cookie"]
        assert "Strict-Transport-Security" not in (await client.get("/healthz")).headers
    async with served(trusted_proxies="10.0.0.0/8") as client:  # a spoofed header is ignored
        resp = await client.get("/healthz", headers=https)
        assert "Strict-Transport-Security" not in resp.headers
        assert "Secure" not in (await login(client, **https)).headers["Set-Cookie"]


async def test_hsts_can_be_turned_off(served: Served) -> None:
    async with served(public_url="https://hub.example", hsts_max_age_s=0) as client:
        assert "Strict-Transport-Security" not in (await client.get("/healthz")).headers


# --- CSRF ---------------------------------------------------------------------------------------
async def test_console_post_needs_the_csrf_token(served: Served) -> None:
    async with served() as client:
        token = (await (await login(client)).json())["csrf"]
        url = "/console/api/conversations/rest%3Adefault%3Anope/claim"
        refused = await client.post(url, json={})
        assert refused.status == 403
        assert "CSRF" in (await refused.json())["error"]
        wrong = await client.post(url, json={}, headers={auth.CSRF_HEADER: "x" + token})
        assert wrong.status == 403
        # With the token the request reaches the handler (no such conversation: 404).
        ok = await client.post(url, json={}, headers={auth.CSRF_HEADER: token})
        assert ok.status == 404
        # Any state-changing method, even one no route answers, is checked first.
        assert (await client.delete("/console/api/queue")).status == 403
        assert (await client.put("/console/api/me", json={})).status == 403
        out = await client.post("/console/api/logout", json={}, headers={auth.CSRF_HEADER: token})
        assert out.status == 204
        # Logged out: no session, so 401 (not a CSRF error) whatever the headers.
        assert (await client.post(url, json={}, headers={auth.CSRF_HEADER: token})).status == 401


async def test_cross_origin_console_posts_are_refused(served: Served) -> None:
    async with served() as client:
        own = f"http://{client.host}:{client.port}"
        assert (await login(client, Origin="https://evil.example")).status == 403
        assert (await login(client, Origin="null")).status == 403
        assert (await login(client, **{"Sec-Fetch-Site": "cross-site"})).status == 403
        assert (await login(client, **{"Sec-Fetch-Site": "same-site"})).status == 403
        resp = await login(client, Origin=own, **{"Sec-Fetch-Site": "same-origin"})
        assert resp.status == 200
        token = (await resp.json())["csrf"]
        # A valid token does not make a cross-origin request acceptable.
        resp = await client.post(
            "/console/api/logout",
            json={},
            headers={auth.CSRF_HEADER: token, "Origin": "https://evil.example"},
        )
        assert resp.status == 403
        assert (await client.get("/console/api/me")).status == 200  # still logged in


async def test_api_key_requests_are_not_cookie_csrf_checked(served: Served) -> None:
    async with served(api_keys=[SecretStr("k-123")]) as client:
        resp = await client.post(
            "/api/v1/conversations/c1/messages",
            json={"text": "hello", "user": {"id": "u1"}},
            headers={"Authorization": "Bearer k-123", "Origin": "https://app.example"},
        )
        assert resp.status == 202
        assert "Set-Cookie" not in resp.headers


# --- no inline code in the pages the CSP protects ----------------------------------------------
class _InlineFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style":
            self.found.append("<style>")
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        self.found.extend(f"{tag}[{n}]" for n in names if n == "style" or n.startswith("on"))


@pytest.mark.parametrize(
    ("package", "name"),
    [("bot.console", "static/index.html"), ("channels.webchat", "static/demo.html")],
)
def test_pages_have_no_inline_script_style_or_handler(package: str, name: str) -> None:
    finder = _InlineFinder()
    finder.feed(resources.files(package).joinpath(name).read_text("utf-8"))
    assert finder.found == []
