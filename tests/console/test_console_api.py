"""The console's HTTP API through aiohttp's test client: auth, CSRF, rate limit, actions, SSE."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from pydantic import SecretStr

from bot import auth
from bot.config import Settings
from bot.console import setup_console
from bot.envelope import OutboundKind, SessionKey
from bot.store.base import AgentAccount, SessionMode
from tests.console.desk import Desk, open_desk

PASSWORD = "correct horse battery"


@pytest.fixture
async def desk(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Desk]:
    if request.node.cls is not TestPasswords:
        # argon2's default costs ~0.2 s per hash; HTTP tests do not need that strength.
        monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    async with open_desk(tmp_path) as d:
        await auth.add_agent(d.store, "alice", PASSWORD, "Alice Agent")
        await auth.add_agent(d.store, "bob", PASSWORD, "Bob")
        yield d


@pytest.fixture
async def client(desk: Desk) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    setup_console(app, desk)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c


Client = TestClient[web.Request, web.Application]


async def login(client: Client, name: str = "alice", password: str = PASSWORD) -> str:
    resp = await client.post("/console/api/login", json={"name": name, "password": password})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return str(body["csrf"])


def path(key: SessionKey, action: str) -> str:
    return f"/console/api/conversations/{quote(key, safe='')}/{action}"


async def post(client: Client, url: str, csrf: str | None, body: Any = None) -> Any:
    headers = {auth.CSRF_HEADER: csrf} if csrf is not None else {}
    return await client.post(url, json=body or {}, headers=headers)


class TestPageAndLogin:
    async def test_page_and_assets(self, client: Client) -> None:
        resp = await client.get("/console", allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == "/console/"
        page = await client.get("/console/")
        assert page.status == 200
        html = await page.text()
        assert 'data-testid="login-form"' in html
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        js = await client.get("/console/static/console.js")
        assert js.status == 200
        assert "EventSource" in await js.text()
        # The one innerHTML is the server's sanitized Markdown (bot.desk.markdown), never text.
        assert re.findall(r"\.innerHTML\s*=\s*([^;]+);", await js.text()) == ["m.html"]
        css = await client.get("/console/static/console.css")
        assert css.status == 200

    async def test_unauthenticated_is_401(self, client: Client, desk: Desk) -> None:
        key = await desk.customer_says("help")
        for url in ("/console/api/me", "/console/api/queue", "/console/api/events"):
            resp = await client.get(url)
            assert resp.status == 401, url
            assert (await resp.json())["error"]
        assert (await client.get(path(key, "messages"))).status == 401
        assert (await post(client, path(key, "claim"), "x")).status == 401

    async def test_wrong_password_and_unknown_name(self, client: Client) -> None:
        for name, password in (("alice", "wrong password"), ("nobody", PASSWORD)):
            resp = await client.post(
                "/console/api/login", json={"name": name, "password": password}
            )
            assert resp.status == 401
            assert (await resp.json())["error"] == "wrong name or password"
            assert auth.SESSION_COOKIE not in resp.cookies
        assert (await client.get("/console/api/me")).status == 401

    async def test_login_me_logout(self, client: Client) -> None:
        resp = await client.post(
            "/console/api/login", json={"name": "alice", "password": PASSWORD}
        )
        assert resp.status == 200
        body = await resp.json()
        assert body["agent"] == {
            "name": "alice",
            "display_name": "Alice Agent",
            "role": "agent",
            "active": True,
        }
        cookie = resp.cookies[auth.SESSION_COOKIE]
        assert cookie["httponly"]
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/console"
        assert PASSWORD not in cookie.value
        assert "alice" not in cookie.value

        me = await client.get("/console/api/me")
        assert me.status == 200
        assert (await me.json())["csrf"] == body["csrf"]
        assert (await me.json())["permissions"] == ["act", "read"]
        # The page shows the Knowledge view only when its console extension is loaded.
        assert (await me.json())["extensions"] == body["extensions"] == ["knowledge"]

        assert (await post(client, "/console/api/logout", None)).status == 403
        assert (await post(client, "/console/api/logout", "forged")).status == 403
        assert (await post(client, "/console/api/logout", "forgéd")).status == 403
        assert (await client.get("/console/api/me")).status == 200
        assert (await post(client, "/console/api/logout", body["csrf"])).status == 204
        assert (await client.get("/console/api/me")).status == 401

    async def test_login_needs_json(self, client: Client) -> None:
        resp = await client.post(
            "/console/api/login", data={"name": "alice", "password": PASSWORD}
        )
        assert resp.status == 400
        assert (await resp.json())["field"] == "content-type"
        bad = await client.post(
            "/console/api/login", data=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert bad.status == 400

    async def test_tampered_cookie_is_rejected(self, client: Client) -> None:
        await login(client)
        jar = client.session.cookie_jar
        value = next(c.value for c in jar if c.key == auth.SESSION_COOKIE)
        forged = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
        jar.clear()
        jar.update_cookies({auth.SESSION_COOKIE: forged}, client.make_url("/console/"))
        assert (await client.get("/console/api/me")).status == 401

    async def test_failed_logins_are_rate_limited_per_name(self, client: Client) -> None:
        for _ in range(5):
            resp = await client.post(
                "/console/api/login", json={"name": "alice", "password": "guess"}
            )
            assert resp.status == 401
        blocked = await client.post(
            "/console/api/login", json={"name": "ALICE", "password": PASSWORD}
        )
        assert blocked.status == 429
        assert int(blocked.headers["Retry-After"]) > 0
        # another name is not affected
        await login(client, "bob")


class TestActions:
    async def test_csrf_is_enforced_on_every_action(self, client: Client, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        await login(client)
        for action, body in (
            ("claim", {}),
            ("reply", {"text": "hi"}),
            ("note", {"text": "n"}),
            ("resolve", {}),
        ):
            assert (await post(client, path(key, action), None, body)).status == 403, action
            assert (await post(client, path(key, action), "wrong", body)).status == 403, action
        conv = await desk.store.conversation(key)
        assert conv is not None
        assert conv.mode == SessionMode.QUEUED
        assert len(await desk.store.messages(key, include_internal=True)) == 2

    async def test_queue_claim_reply_note_resolve(self, client: Client, desk: Desk) -> None:
        # a session key with characters that need escaping in a URL path
        key = await desk.customer_says("My parcel is lost", chat="ord/42:x%y")
        await desk.handoff.escalate(key, "customer_request")
        csrf = await login(client)

        queue = await (await client.get("/console/api/queue")).json()
        [item] = queue["conversations"]
        assert item["session_key"] == key
        assert item["mode"] == "queued"
        assert item["escalation_reason"] == "customer_request"
        assert item["waiting_s"] >= 0
        assert item["customer"]["name"] == "Dana Customer"

        claimed = await post(client, path(key, "claim"), csrf)
        assert claimed.status == 200
        assert (await claimed.json())["conversation"]["assigned_agent"] == "alice"

        reply = await post(client, path(key, "reply"), csrf, {"text": "On it!"})
        assert reply.status == 200
        assert (await reply.json())["message"]["kind"] == "agent"
        out = desk.sent_to(key)[-1]
        assert (out.kind, out.author, out.text) == (OutboundKind.AGENT, "Alice Agent", "On it!")

        note = await post(client, path(key, "note"), csrf, {"text": "checked the carrier"})
        assert note.status == 200
        assert desk.sent_to(key)[-1].text == "On it!"  # the note was not sent

        listing = await (await client.get(path(key, "messages") + "?after=0")).json()
        kinds = [(m["role"], m["kind"], m["internal"]) for m in listing["messages"]]
        assert kinds == [
            ("customer", "message", False),
            ("system", "handoff", False),
            ("system", "notice", False),
            ("agent", "agent", False),
            ("agent", "note", True),
        ]
        last = listing["messages"][-2]["seq"]
        newer = await (await client.get(path(key, "messages") + f"?after={last}")).json()
        assert [m["text"] for m in newer["messages"]] == ["checked the carrier"]

        resolved = await post(client, path(key, "resolve"), csrf)
        assert resolved.status == 200
        assert (await resolved.json())["conversation"]["mode"] == "bot"
        assert (await (await client.get("/console/api/queue")).json())["conversations"] == []

    async def test_errors_map_to_statuses(self, client: Client, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        csrf = await login(client)
        # reply before claiming: 409
        assert (await post(client, path(key, "reply"), csrf, {"text": "hi"})).status == 409
        empty = await post(client, path(key, "reply"), csrf, {"text": "  "})
        assert empty.status == 400
        assert (await empty.json())["field"] == "text"
        big = await post(client, path(key, "note"), csrf, {"text": "x" * (33 * 1024)})
        assert big.status == 413
        unknown = SessionKey("rest:default:missing")
        assert (await client.get(path(unknown, "messages"))).status == 404
        assert (await post(client, path(unknown, "claim"), csrf)).status == 404
        # Bob owns it: Alice gets 409 on claim and 403 on resolve
        await desk.handoff.claim(key, await _account(desk, "bob"))
        assert (await post(client, path(key, "claim"), csrf)).status == 409
        assert (await post(client, path(key, "resolve"), csrf)).status == 403

    async def test_events_stream_message_and_mode(self, client: Client, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await login(client)
        resp = await client.get("/console/api/events")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert (await _next_event(resp))[0] == "ready"
        await desk.handoff.escalate(key, "customer_request")
        seen = [await _next_event(resp) for _ in range(2)]
        by_type = {name: data for name, data in seen}
        assert by_type["mode"]["session_key"] == key
        assert by_type["mode"]["mode"] == "queued"
        assert by_type["message"]["session_key"] == key
        assert by_type["message"]["kind"] == "handoff"
        assert isinstance(by_type["message"]["seq"], int)
        resp.close()

    async def test_server_shutdown_ends_open_streams(self, client: Client, desk: Desk) -> None:
        await login(client)
        resp = await client.get("/console/api/events")
        assert (await _next_event(resp))[0] == "ready"
        assert desk.events.subscriber_count == 1
        async with asyncio.timeout(5):  # aiohttp alone would wait 60 s for the handler
            await client.server.close()
        assert desk.events.subscriber_count == 0
        resp.close()


async def _account(desk: Desk, name: str) -> AgentAccount:
    account = await desk.store.agent(name)
    assert account is not None
    return account


async def _next_event(resp: Any) -> tuple[str, dict[str, Any]]:
    """Read one SSE event (``event:`` + ``data:`` lines, blank line), skipping comments."""
    name, data = "message", ""
    async with asyncio.timeout(5):
        while True:
            raw: bytes = await resp.content.readline()
            line = raw.decode().rstrip("\n")
            if line == "" and data:
                return name, json.loads(data)
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]


class TestSessionKey:
    def test_random_key_file_is_private_and_stable(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path / "data")
        key = auth.session_key_bytes(settings)
        assert len(key) == 32
        path = tmp_path / "data" / auth.KEY_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert auth.session_key_bytes(settings) == key

    def test_configured_secret_derives_the_key(self, tmp_path: Path) -> None:
        a = Settings(data_dir=tmp_path, console_session_secret=SecretStr("s3cret-one"))
        b = Settings(data_dir=tmp_path, console_session_secret=SecretStr("s3cret-two"))
        assert auth.session_key_bytes(a) == auth.session_key_bytes(a)
        assert auth.session_key_bytes(a) != auth.session_key_bytes(b)
        assert not (tmp_path / auth.KEY_FILE).exists()


class TestPasswords:
    def test_hash_is_argon2id_and_verifies(self) -> None:
        h = auth.hash_password(PASSWORD)
        assert h.startswith("$argon2id$")
        assert PASSWORD not in h
        assert auth.verify_password(h, PASSWORD).ok
        assert not auth.verify_password(h, PASSWORD + "x").ok
        assert not auth.verify_password("not a hash", PASSWORD).ok

    async def test_outdated_hash_is_rehashed_on_login(self, desk: Desk) -> None:
        from dataclasses import replace

        weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
        account = await _account(desk, "bob")
        await desk.store.update_agent(replace(account, password_hash=weak))
        assert auth.verify_password(weak, PASSWORD).new_hash is not None
        await auth.authenticate(desk.store, "bob", PASSWORD)
        stored = await _account(desk, "bob")
        assert stored.password_hash != weak
        assert auth.verify_password(stored.password_hash, PASSWORD) == auth.PasswordCheck(True)

    async def test_add_agent_validates(self, desk: Desk) -> None:
        from bot.errors import Conflict, PayloadInvalid

        with pytest.raises(PayloadInvalid) as short:
            await auth.add_agent(desk.store, "carol", "short")
        assert short.value.field == "password"
        with pytest.raises(PayloadInvalid) as bad:
            await auth.add_agent(desk.store, "bad name!", PASSWORD)
        assert bad.value.field == "name"
        with pytest.raises(Conflict):
            await auth.add_agent(desk.store, "alice", PASSWORD)
        carol = await auth.add_agent(desk.store, "carol", PASSWORD)
        assert carol.display_name == "carol"
