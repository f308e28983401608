"""Admins read and export the audit log and answer data-subject requests from the console."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from bot import auth
from bot.envelope import session_key
from bot.store.base import AgentRole
from tests.console.desk import Desk, open_desk
from tests.console.test_console_api import PASSWORD, Client, login, post
from tests.console.test_console_roles import _client


@pytest.fixture
async def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Desk]:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    async with open_desk(tmp_path) as d:
        await auth.add_agent(d.store, "root", PASSWORD, "Root", role=AgentRole.ADMIN)
        await auth.add_agent(d.store, "alice", PASSWORD, "Alice")
        yield d


@pytest.fixture
async def clients(desk: Desk) -> AsyncIterator[dict[str, tuple[Client, str]]]:
    made: dict[str, tuple[Client, str]] = {}
    try:
        for name in ("root", "alice"):
            client = await _client(desk)
            made[name] = (client, await login(client, name))
        yield made
    finally:
        for client, _ in made.values():
            await client.close()


async def test_admin_reads_exports_and_erases_agents_cannot(
    desk: Desk, clients: dict[str, tuple[Client, str]]
) -> None:
    dana = await desk.customer_says("my card 4111 1111 1111 1111 was charged twice", chat="d")
    await desk.customer_says("hello from Olga", chat="o", name="Olga Other")
    await desk.handoff.escalate(dana, "customer_request")
    root, csrf = clients["root"]
    alice, alice_csrf = clients["alice"]

    # Agents: 403 on every call.
    assert (await alice.get("/console/api/audit")).status == 403
    assert (await alice.get("/console/api/audit.jsonl")).status == 403
    for action in ("export", "erase"):
        body = {"id": "rest:user-d", "confirm": True}
        resp = await post(alice, f"/console/api/customers/{action}", alice_csrf, body)
        assert resp.status == 403, action

    # The admin reads the log (newest first) and downloads it as JSON Lines (oldest first).
    entries = (await (await root.get("/console/api/audit?limit=50")).json())["entries"]
    actions = [e["action"] for e in entries]
    assert [e["seq"] for e in entries] == sorted((e["seq"] for e in entries), reverse=True)
    assert "escalate" in actions
    assert (await root.get("/console/api/audit?limit=0")).status == 400
    jsonl = await (await root.get("/console/api/audit.jsonl")).text()
    lines = [json.loads(line) for line in jsonl.splitlines()]
    assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)
    assert {line["action"] for line in lines} >= {"escalate", "login"}

    # Export, then erase: Dana is gone, Olga untouched, both written to the log.
    resp = await post(root, "/console/api/customers/export", csrf, {"id": "rest:user-d"})
    assert resp.status == 200
    assert "charged twice" in await resp.text()
    resp = await post(root, "/console/api/customers/erase", csrf, {"id": "rest:user-d"})
    assert resp.status == 400  # no confirm
    resp = await post(root, "/console/api/customers/erase", csrf, {"id": "rest"})
    assert resp.status == 400  # neither an e-mail nor CHANNEL:USER_ID
    body = {"id": "rest:user-d", "confirm": True}
    resp = await post(root, "/console/api/customers/erase", csrf, body)
    assert resp.status == 200
    assert (await resp.json())["sessions"] == 1
    assert await desk.store.messages(dana) == []
    [olga] = [m.text for m in await desk.store.messages(session_key("rest", "default", chat="o"))]
    assert olga == "hello from Olga"
    after = (await (await root.get("/console/api/audit")).json())["entries"]
    done = [(e["actor"], e["action"]) for e in after]
    assert ("root", "privacy.export") in done
    assert ("root", "privacy.erase") in done
    assert "user-d" not in json.dumps(after)
