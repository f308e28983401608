"""The console's customer panel API against the fake HubSpot: fields, authorization, outages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from bot import auth
from bot.console import setup_console
from bot.envelope import InboundMessage, Participant, SessionKey
from bot.envelope import session_key as make_key
from plugins.crm.hubspot import HubSpotCrm
from tests.console.desk import Desk, open_desk
from tests.console.test_console_api import PASSWORD, Client, login, path
from tests.fakes.hubspot_api import FakeHubSpot
from tests.plugins.crm.contract import crm_settings

ALICE = Participant(id="U-alice", name="Alice", email="alice@example.com", verified=True)


async def customer_writes(desk: Desk, customer: Participant, chat: str) -> SessionKey:
    key = make_key("rest", "default", dm_peer=chat)
    await desk.store.append_inbound(
        InboundMessage(
            event_id=f"{chat}-1",
            channel="rest",
            account="default",
            session_key=key,
            sender=customer,
            text="where is my order?",
        )
    )
    return key


@pytest.fixture
async def hubspot() -> AsyncIterator[FakeHubSpot]:
    async with FakeHubSpot() as fake:
        company = fake.add("companies", name="Wonderland Ltd", plan="Enterprise")
        owner = fake.add("owners", firstName="Olivia", lastName="Owner", email="o@example.com")
        fake.add(
            "contacts",
            firstname="Alice",
            lastname="Liddell",
            email="alice@example.com",
            associatedcompanyid=company,
            hubspot_owner_id=owner,
        )
        yield fake


@pytest.fixture
async def desk(
    tmp_path: Path, hubspot: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Desk]:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    async with open_desk(tmp_path) as d:
        await auth.add_agent(d.store, "alice", PASSWORD, "Alice Agent")
        d.crm = HubSpotCrm(
            crm_settings(hubspot_access_token=hubspot.token, hubspot_api_url=hubspot.base_url)
        )
        yield d


@pytest.fixture
async def client(desk: Desk) -> AsyncIterator[Client]:
    app = web.Application()
    setup_console(app, desk)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c


async def test_panel_shows_the_verified_customers_record_and_open_tickets(
    client: Client, desk: Desk, hubspot: FakeHubSpot
) -> None:
    key = await customer_writes(desk, ALICE, "U-alice")
    ticket = await desk.tickets.create(
        subject="Order late", description="x", requester=ALICE, channel="rest", session_key=key
    )
    assert (await client.get(path(key, "customer"))).status == 401  # logged out
    await login(client)
    resp = await client.get(path(key, "customer"))
    assert resp.status == 200
    body = await resp.json()
    assert body["crm"] == "hubspot"
    assert body["verified"] is True
    contact = body["contact"]
    assert (contact["name"], contact["company"], contact["plan"], contact["owner"]) == (
        "Alice Liddell",
        "Wonderland Ltd",
        "Enterprise",
        "Olivia Owner",
    )
    assert [t["id"] for t in body["open_tickets"]] == [ticket.id]
    [search] = hubspot.requests_to("/contacts/search")
    assert search.body["filterGroups"][0]["filters"][0]["value"] == "alice@example.com"
    [record] = await desk.store.audit_records(session_key=key)
    assert (record.actor, record.action) == ("alice", "crm_lookup")


async def test_unverified_customer_is_never_looked_up(
    client: Client, desk: Desk, hubspot: FakeHubSpot
) -> None:
    claimer = Participant(id="anon", email="alice@example.com", verified=False)
    key = await customer_writes(desk, claimer, "anon")
    await login(client)
    body = await (await client.get(path(key, "customer"))).json()
    assert body["verified"] is False
    assert body["contact"] is None
    assert hubspot.received == []


async def test_crm_rate_limit_and_outage(client: Client, desk: Desk, hubspot: FakeHubSpot) -> None:
    key = await customer_writes(desk, ALICE, "U-alice")
    await login(client)
    hubspot.fail_next(429, retry_after="12")
    resp = await client.get(path(key, "customer"))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "12"
    # Honoured: the next look within 12 s is refused without asking HubSpot.
    resp = await client.get(path(key, "customer"))
    assert resp.status == 429
    assert len(hubspot.received) == 1
    desk.crm = HubSpotCrm(
        crm_settings(hubspot_access_token=hubspot.token, hubspot_api_url=hubspot.base_url)
    )
    hubspot.fail_next(503)
    resp = await client.get(path(key, "customer"))
    assert resp.status == 503
    assert "503" in (await resp.json())["error"]
    assert (await client.get(path(SessionKey("rest:default:nobody"), "customer"))).status == 404


async def test_no_crm_configured(client: Client, desk: Desk) -> None:
    desk.crm = None
    key = await customer_writes(desk, ALICE, "U-alice")
    await login(client)
    body = await (await client.get(path(key, "customer"))).json()
    assert body == {"crm": None, "verified": True, "contact": None, "open_tickets": []}
