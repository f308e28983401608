"""The external ticket products as the sync and failure tests drive them (fakes + settings)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from channels.memory.pytest_plugin import HubFactory
from channels.webchat.plugin import WebchatChannel
from plugins.ticketing.webhooks import (
    JIRA_DELIVERY,
    JIRA_SIGNATURE,
    ZENDESK_SIGNATURE,
    ZENDESK_TIMESTAMP,
    sign_jira,
    sign_zendesk,
)
from tests.channels.support import serve_hub
from tests.channels.test_webchat import Client, Socket
from tests.fakes.jira_api import FakeJira
from tests.fakes.zendesk_api import FakeZendesk

ZD_SECRET = "zd-signing-secret"
JIRA_SECRET = "jira-webhook-secret"


@dataclass
class Product:
    """One external product as the tests drive it."""

    name: str
    fake: Any
    overrides: dict[str, Any]
    path: str

    def created(self) -> list[dict[str, Any]]:
        """The bodies of the ticket creations the product received."""
        if self.name == "zendesk":
            return [r.body["ticket"] for r in self.fake.calls("POST", "/api/v2/tickets.json")]
        return [r.body for r in self.fake.calls("POST", "/rest/servicedeskapi/request")]

    def comments_received(self) -> list[str]:
        """The texts of the comments the hub added to tickets there."""
        if self.name == "zendesk":
            puts = self.fake.calls("PUT", "/api/v2/tickets/")
            return [
                r.body["ticket"]["comment"]["body"] for r in puts if "comment" in r.body["ticket"]
            ]
        return [
            r.body["body"]
            for r in self.fake.calls("POST", "/rest/api/2/issue/")
            if r.path.endswith("/comment")
        ]

    def transcript(self, body: dict[str, Any]) -> str:
        if self.name == "zendesk":
            return str(body["comment"]["body"])
        return str(body["requestFieldValues"]["description"])

    def only_ticket(self) -> Any:
        tickets = self.fake.tickets if self.name == "zendesk" else self.fake.issues
        [ticket_id] = list(tickets)
        return ticket_id

    def signed(self, body: bytes, delivery: str | None = None) -> dict[str, str]:
        if self.name == "zendesk":
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return {
                ZENDESK_SIGNATURE: sign_zendesk(ZD_SECRET, stamp, body),
                ZENDESK_TIMESTAMP: stamp,
            }
        return {JIRA_SIGNATURE: sign_jira(JIRA_SECRET, body), JIRA_DELIVERY: delivery or ""}

    def reply(self, ticket_id: Any, text: str) -> tuple[bytes, dict[str, str]]:
        if self.name == "zendesk":
            body = self.fake.agent_reply(ticket_id, text)
            return body, self.signed(body)
        body, delivery = self.fake.agent_reply(ticket_id, text)
        return body, self.signed(body, delivery)

    def solve(self, ticket_id: Any) -> tuple[bytes, dict[str, str]]:
        if self.name == "zendesk":
            body = self.fake.solve(ticket_id)
            return body, self.signed(body)
        body, delivery = self.fake.resolve(ticket_id)
        return body, self.signed(body, delivery)


def zendesk_product(zd: FakeZendesk) -> Product:
    """The fake Zendesk with the hub settings that use it."""
    overrides = {
        "ticket_backend": "zendesk",
        "zendesk_url": zd.url,
        "zendesk_email": zd.email,
        "zendesk_api_token": zd.token,
        "zendesk_webhook_secret": ZD_SECRET,
    }
    return Product("zendesk", zd, overrides, "/webhooks/zendesk")


def jira_product(jira: FakeJira) -> Product:
    """The fake Jira Service Management with the hub settings that use it."""
    overrides = {
        "ticket_backend": "jira",
        "jira_url": jira.url,
        "jira_email": jira.email,
        "jira_api_token": jira.token,
        "jira_service_desk_id": jira.desk_id,
        "jira_request_type_id": "12",
        "jira_webhook_secret": JIRA_SECRET,
    }
    return Product("jira", jira, overrides, "/webhooks/jira")


@pytest_asyncio.fixture(params=["zendesk", "jira"])
async def product(request: pytest.FixtureRequest) -> AsyncIterator[Product]:
    """Each external product in turn, its fake server running."""
    if request.param == "zendesk":
        async with FakeZendesk() as zd:
            yield zendesk_product(zd)
    else:
        async with FakeJira() as jira:
            yield jira_product(jira)


@pytest_asyncio.fixture
async def client(hub_factory: HubFactory, product: Product) -> AsyncIterator[Client]:
    hub = await hub_factory(channels=(WebchatChannel,), **product.overrides)
    async with serve_hub(hub) as c:
        yield c


async def escalate(client: Client) -> Socket:
    """A web chat customer asks a question, then for a human; returns their socket."""
    sock = await Socket.open(client)
    await sock.next(type="hello")
    await sock.say("My invoice shows the wrong VAT number", "w-1")
    await sock.next(type="message", role="bot")
    await sock.say("I want to talk to a human", "w-2")
    mode = await sock.next(type="mode")
    assert mode["mode"] == "queued"
    await sock.next(type="message", role="system")
    return sock
