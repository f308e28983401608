"""Console roles through the HTTP API: viewers read only, agents act, admins manage accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from bot import auth
from bot.console import setup_console
from bot.envelope import InboundMessage, Participant
from bot.envelope import session_key as make_key
from bot.store.base import AgentRole, SessionMode
from tests.console.desk import Desk, open_desk
from tests.console.test_console_api import PASSWORD, Client, login, path, post


@pytest.fixture
async def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Desk]:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    async with open_desk(tmp_path) as d:
        await auth.add_agent(d.store, "root", PASSWORD, "Root", role=AgentRole.ADMIN)
        await auth.add_agent(d.store, "alice", PASSWORD, "Alice")
        await auth.add_agent(d.store, "vic", PASSWORD, "Vic", role=AgentRole.VIEWER)
        yield d


async def _client(desk: Desk) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    setup_console(app, desk)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    return client


@pytest.fixture
async def clients(desk: Desk) -> AsyncIterator[dict[str, tuple[Client, str]]]:
    """One logged-in client per account: name → (client, csrf)."""
    made: dict[str, tuple[Client, str]] = {}
    try:
        for name in ("root", "alice", "vic"):
            client = await _client(desk)
            made[name] = (client, await login(client, name))
        yield made
    finally:
        for client, _ in made.values():
            await client.close()


async def test_a_viewer_reads_but_cannot_act(
    desk: Desk, clients: dict[str, tuple[Client, str]]
) -> None:
    key = await desk.customer_says("I want to talk to a person")
    await desk.handoff.escalate(key, "customer_request")
    vic, csrf = clients["vic"]
    me = await (await vic.get("/console/api/me")).json()
    assert me["permissions"] == ["read"]
    assert (await vic.get("/console/api/queue")).status == 200
    assert (await vic.get(path(key, "messages"))).status == 200
    for action, body in (
        ("claim", {}),
        ("reply", {"text": "hi"}),
        ("note", {"text": "hm"}),
        ("resolve", {}),
    ):
        resp = await post(vic, path(key, action), csrf, body)
        assert resp.status == 403, action
        assert "viewer" in (await resp.json())["error"]
    assert (await vic.get("/console/api/agents")).status == 403
    assert (await post(vic, "/console/api/agents/vic", csrf, {"role": "admin"})).status == 403
    conv = await desk.store.conversation(key)
    assert conv is not None
    assert conv.mode is SessionMode.QUEUED  # nothing changed
    assert len(await desk.store.messages(key, include_internal=True)) == 2  # message + notice

    alice, alice_csrf = clients["alice"]
    assert (await post(alice, path(key, "claim"), alice_csrf)).status == 200
    assert (await post(alice, path(key, "reply"), alice_csrf, {"text": "Hello"})).status == 200
    assert (await alice.get("/console/api/agents")).status == 403
    resp = await post(alice, "/console/api/agents", alice_csrf, {"name": "x", "password": "p" * 9})
    assert resp.status == 403


async def test_an_admin_manages_accounts(
    desk: Desk, clients: dict[str, tuple[Client, str]]
) -> None:
    root, csrf = clients["root"]
    listed = await (await root.get("/console/api/agents")).json()
    assert [(a["name"], a["role"], a["active"]) for a in listed["agents"]] == [
        ("alice", "agent", True),
        ("root", "admin", True),
        ("vic", "viewer", True),
    ]
    assert all("password_hash" not in a for a in listed["agents"])
    body = {"name": "nia", "password": "new agent pw", "display_name": "Nia", "role": "viewer"}
    resp = await post(root, "/console/api/agents", csrf, body)
    assert resp.status == 201
    assert (await resp.json())["agent"]["role"] == "viewer"
    assert (await post(root, "/console/api/agents", csrf, body)).status == 409
    bad = {"name": "zed", "password": "long enough", "role": "boss"}
    resp = await post(root, "/console/api/agents", csrf, bad)
    assert resp.status == 400
    assert (await resp.json())["field"] == "role"
    resp = await post(root, "/console/api/agents", csrf, {"name": "zed", "password": "short"})
    assert (await resp.json())["field"] == "password"

    # Promote the viewer: her open session gains the permission at once.
    vic, vic_csrf = clients["vic"]
    resp = await post(root, "/console/api/agents/vic", csrf, {"role": "agent"})
    assert (await resp.json())["agent"]["role"] == "agent"
    key = await desk.customer_says("help me", chat="c2")
    await desk.handoff.escalate(key, "customer_request")
    assert (await post(vic, path(key, "claim"), vic_csrf)).status == 200

    # Disable alice: her session ends at its next request; she cannot log in again.
    alice, _ = clients["alice"]
    resp = await post(root, "/console/api/agents/alice", csrf, {"active": False})
    assert (await resp.json())["agent"]["active"] is False
    assert (await alice.get("/console/api/queue")).status == 401
    resp = await alice.post("/console/api/login", json={"name": "alice", "password": PASSWORD})
    assert resp.status == 401

    # Reset nia's password; the old one stops working.
    resp = await post(root, "/console/api/agents/nia", csrf, {"password": "reset pw 123"})
    assert resp.status == 200
    fresh = await _client(desk)
    try:
        assert await login(fresh, "nia", "reset pw 123")
    finally:
        await fresh.close()

    # The last active admin cannot demote or disable itself.
    resp = await post(root, "/console/api/agents/root", csrf, {"role": "agent"})
    assert resp.status == 409
    assert (await post(root, "/console/api/agents/ghost", csrf, {"active": True})).status == 404
    records = await desk.store.audit_records()
    assert ("root", "agent.create") in [(r.actor, r.action) for r in records]
    assert not any("reset pw" in str(r.detail) for r in records)


async def test_customers_are_shown_by_a_readable_name(
    desk: Desk, clients: dict[str, tuple[Client, str]]
) -> None:
    named = await desk.customer_says("hello", chat="n1", name="Dana Customer")
    opaque = await desk.customer_says("hello", chat="n2", name="9f86d081884c7d659a2feaa0c55ad015")
    for key in (named, opaque):
        await desk.handoff.escalate(key, "customer_request")
    await desk.store.append_inbound(
        desk_message(desk, "n3", Participant(id="u3", email="kim@example.com", verified=True))
    )
    await desk.store.append_inbound(
        desk_message(desk, "n4", Participant(id="u4", email="fake@example.com"))
    )
    vic, _ = clients["vic"]
    shown = {}
    for chat in ("n1", "n2", "n3", "n4"):
        key = make_key("rest", "default", chat=chat)
        data = await (await vic.get(path(key, "messages"))).json()
        shown[chat] = data["conversation"]["customer"]
    assert shown["n1"]["display_name"] == "Dana Customer"
    assert shown["n2"]["display_name"].startswith("API visitor ")
    assert "9f86d081" not in shown["n2"]["display_name"]
    assert shown["n3"]["display_name"] == "kim@example.com"
    assert shown["n3"]["email"] == "kim@example.com"
    assert shown["n4"]["email"] is None  # self-asserted: not shown as known
    assert shown["n4"]["display_name"].startswith("API visitor ")


def desk_message(desk: Desk, chat: str, sender: Participant) -> InboundMessage:
    return InboundMessage(
        event_id=f"{chat}-1",
        channel="rest",
        account="default",
        session_key=make_key("rest", "default", chat=chat),
        sender=sender,
        text="hi",
    )
