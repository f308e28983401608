"""The assignment and SLA console APIs: roles, presence, teams, transfer, SLA breaches."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from bot import auth
from bot.envelope import SessionKey
from bot.events import HubEvent
from bot.sla import parse_policy
from bot.store.base import SessionMode
from bot.store.routing_records import Priority
from tests.console.desk import Desk, open_desk
from tests.console.test_console_api import PASSWORD, Client, login, path, post
from tests.console.test_console_roles import _client, clients, desk

__all__ = ["clients", "desk"]

Clients = dict[str, tuple[Client, str]]
POLICY = {"name": "fast", "first_response_s": 60, "resolution_s": 3600}


async def test_a_viewer_cannot_change_teams_presence_of_others_or_settings(
    desk: Desk, clients: Clients
) -> None:
    root, root_csrf = clients["root"]
    vic, csrf = clients["vic"]
    alice, alice_csrf = clients["alice"]
    assert (await post(root, "/console/api/teams", root_csrf, {"name": "billing"})).status == 201
    key = await desk.customer_says("a person please")
    await desk.handoff.escalate(key, "customer_request")
    await post(alice, path(key, "claim"), alice_csrf)
    refused = [
        ("POST", "/console/api/teams", {"name": "sales"}),
        ("POST", "/console/api/teams/billing", {"members": ["vic"]}),
        ("DELETE", "/console/api/teams/billing", None),
        ("POST", "/console/api/presence/alice", {"presence": "offline"}),
        ("POST", "/console/api/presence/alice", {"capacity": 9}),
        ("POST", "/console/api/presence", {"presence": "online"}),
        ("POST", "/console/api/sla/policies", POLICY),
        ("DELETE", "/console/api/sla/policies/fast", None),
        ("POST", path(key, "transfer"), {"agent": "root"}),
    ]
    for method, url, body in refused:
        resp = await vic.request(
            method, url, json=body or {}, headers={"X-Switchboard-CSRF": csrf}
        )
        assert resp.status == 403, (method, url)
    # An agent sets its own presence, not others', and no settings.
    assert (
        await post(alice, "/console/api/presence", alice_csrf, {"presence": "away"})
    ).status == 200
    resp = await post(alice, "/console/api/presence/root", alice_csrf, {"presence": "offline"})
    assert resp.status == 403
    assert (await post(alice, "/console/api/sla/policies", alice_csrf, POLICY)).status == 403
    assert (await post(alice, "/console/api/teams", alice_csrf, {"name": "x"})).status == 403
    # Reading is fine for everyone.
    for url in ("/console/api/teams", "/console/api/presence", "/console/api/routing"):
        assert (await vic.get(url)).status == 200
    teams = await (await vic.get("/console/api/teams")).json()
    assert [t["name"] for t in teams["teams"]] == ["billing"]
    conv = await desk.store.conversation(key)
    assert conv is not None
    assert conv.assigned_agent == "alice"


async def test_admin_sets_up_teams_and_agents_are_assigned_when_online(
    desk: Desk, clients: Clients
) -> None:
    root, csrf = clients["root"]
    alice, alice_csrf = clients["alice"]
    body = {"name": "api", "display_name": "API", "channels": ["rest"], "members": ["alice"]}
    assert (await post(root, "/console/api/teams", csrf, body)).status == 201
    assert (await post(root, "/console/api/teams", csrf, body)).status == 409
    resp = await post(root, "/console/api/teams", csrf, {"name": "Bad Name!"})
    assert (resp.status, (await resp.json())["field"]) == (400, "name")
    resp = await post(root, "/console/api/teams/api", csrf, {"members": ["ghost"]})
    assert (resp.status, (await resp.json())["field"]) == (400, "members")
    resp = await post(root, "/console/api/presence/alice", csrf, {"capacity": 1})
    assert resp.status == 200

    first = await desk.customer_says("human please", chat="one")
    await desk.handoff.escalate(first, "customer_request")
    conv = await desk.store.conversation(first)
    assert conv is not None
    assert conv.mode is SessionMode.QUEUED

    assert (
        await post(alice, "/console/api/presence", alice_csrf, {"presence": "online"})
    ).status == 200
    conv = await desk.store.conversation(first)
    assert conv is not None
    assert (conv.mode, conv.assigned_agent) == (SessionMode.HUMAN, "alice")
    presence = await (await root.get("/console/api/presence")).json()
    shown = {a["name"]: a for a in presence["agents"]}
    assert (shown["alice"]["presence"], shown["alice"]["load"], shown["alice"]["capacity"]) == (
        "online",
        1,
        1,
    )
    assert shown["alice"]["teams"] == ["api"]
    routing = await (await root.get("/console/api/routing")).json()
    assert routing["routing"][first] == {"team": "api", "priority": "normal"}

    # Transfer to the general queue; logging out takes alice offline, so it waits.
    resp = await post(alice, path(first, "transfer"), alice_csrf, {"team": ""})
    assert resp.status == 200
    conv = await desk.store.conversation(first)
    assert conv is not None
    assert conv.assigned_agent == "alice"
    assert (await post(alice, "/console/api/logout", alice_csrf)).status == 204
    [status] = [s for s in await desk.store.agent_statuses() if s.name == "alice"]
    assert status.presence.value == "offline"
    assert (
        await root.delete("/console/api/teams/api", headers={"X-Switchboard-CSRF": csrf})
    ).status == 204
    assert (
        await root.delete("/console/api/teams/api", headers={"X-Switchboard-CSRF": csrf})
    ).status == 404


async def test_sla_breach_is_recorded_announced_and_escalates_priority(
    desk: Desk, clients: Clients
) -> None:
    root, csrf = clients["root"]
    policy = {
        "name": "test",
        "first_response_s": 1,
        "resolution_s": 3600,
        "escalate_to": "urgent",
    }
    assert (await post(root, "/console/api/sla/policies", csrf, policy)).status == 200
    bad = dict(policy, first_response_s=0)
    resp = await post(root, "/console/api/sla/policies", csrf, bad)
    assert (resp.status, (await resp.json())["field"]) == (400, "first_response_s")

    events: list[HubEvent] = []
    async with desk.events.subscribe() as sub:
        key = await desk.customer_says("a person please")
        await desk.handoff.escalate(key, "customer_request")
        sla = desk.handoff.assignment.sla
        assert await sla.sweep() == 0  # not due yet
        routing = await (await root.get("/console/api/routing")).json()
        left = routing["sla"][key]["first_response_left_s"]
        assert 0 <= left <= 1
        await asyncio.sleep(1.1)
        assert await sla.sweep() == 1
        assert await sla.sweep() == 0  # recorded once
        while (event := await sub.get(0.1)) is not None:
            events.append(event)
    breach = [e for e in events if e.type == "sla"]
    assert [(e.session_key, e.data["kind"], e.data["priority"]) for e in breach] == [
        (key, "first_response", "urgent")
    ]
    assert (await desk.store.routings([key]))[key].priority is Priority.URGENT
    routing = await (await root.get("/console/api/routing")).json()
    assert routing["sla"][key]["breaches"].keys() == {"first_response"}
    assert routing["sla"][key]["first_response_left_s"] < 0
    records = await desk.store.audit_records(session_key=key)
    assert "sla_breach" in [r.action for r in records]
    assert "text" not in json.dumps([r.detail for r in records])


async def test_sla_timer_survives_a_restart(tmp_path: Path) -> None:
    async with open_desk(tmp_path) as desk:
        await desk.store.save_sla_policy(
            parse_policy({"name": "short", "first_response_s": 1, "resolution_s": 2})
        )
        key: SessionKey = await desk.customer_says("a person please")
        await desk.handoff.escalate(key, "customer_request")
        [before] = await desk.store.sla_timers([key])
    await asyncio.sleep(1.1)
    async with open_desk(tmp_path) as desk:  # a new process on the same database
        [after] = await desk.store.sla_timers([key])
        assert after == before
        assert await desk.handoff.assignment.sla.sweep() == 1
        [timer] = await desk.store.sla_timers([key])
        assert set(timer.breaches) == {"first_response"}


async def test_an_open_console_keeps_its_agent_online_a_closed_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    async with open_desk(tmp_path, presence_timeout_s=0.6) as d:
        await auth.add_agent(d.store, "alice", PASSWORD, "Alice")
        client = await _client(d)
        try:
            csrf = await login(client, "alice")
            resp = await post(client, "/console/api/presence", csrf, {"presence": "online"})
            assert resp.status == 200
            stream = await client.get("/console/api/events")
            assert stream.status == 200
            assert b"event: ready" in await stream.content.readuntil(b"\n\n")
            for _ in range(4):  # twice the timeout: the open stream keeps her online
                await asyncio.sleep(0.3)
                assert await d.handoff.assignment.expire_presence() == []
            stream.close()
            await asyncio.sleep(1.0)
            assert await d.handoff.assignment.expire_presence() == ["alice"]
            presence = await (await client.get("/console/api/presence")).json()
            assert presence["agents"][0]["presence"] == "offline"
        finally:
            await client.close()


async def test_a_business_hours_policy_counts_only_open_hours_and_the_most_specific_wins(
    tmp_path: Path,
) -> None:
    """The desk is open one hour a week (09:00-10:00 UTC, two days from now): a 1-minute
    first reply is due at 09:01 that day, a 2-hour resolution a week later at 10:00. A policy
    for any team and priority loses to it: the more specific policy wins."""
    from datetime import UTC, datetime, timedelta

    from bot.business_hours import WEEKDAYS

    opening = (datetime.now(UTC) + timedelta(days=2)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    hours = {
        "timezone": "UTC",
        "hours": {WEEKDAYS[opening.weekday()]: "09:00-10:00"},
    }
    async with open_desk(tmp_path) as desk:
        await desk.store.save_sla_policy(
            parse_policy({"name": "anyone", "first_response_s": 5, "resolution_s": 10})
        )
        await desk.store.save_sla_policy(
            parse_policy(
                {
                    "name": "office",
                    "priority": "normal",
                    "first_response_s": 60,
                    "resolution_s": 7200,
                    "business_hours": hours,
                }
            )
        )
        key: SessionKey = await desk.customer_says("a person please")
        await desk.handoff.escalate(key, "customer_request")
        [timer] = await desk.store.sla_timers([key])
        assert timer.policy == "office"
        assert timer.first_response_due == opening + timedelta(minutes=1)
        assert timer.resolution_due == opening + timedelta(days=7, hours=1)
