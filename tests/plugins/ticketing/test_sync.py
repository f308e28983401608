"""Two-way sync end to end: web chat → escalation → Zendesk/Jira ticket → agent reply → web chat.

A real hub with the web chat channel serves its app; tickets live in the fake Zendesk or Jira
(real SDKs); the product's webhooks are the bodies the fakes write, signed as the product signs
them and posted to ``/webhooks/zendesk`` or ``/webhooks/jira``.
"""

from __future__ import annotations

import json

from bot.store.base import SessionMode
from channels.memory.pytest_plugin import HubFactory
from channels.webchat.plugin import WebchatChannel
from plugins.ticketing.webhooks import JIRA_SIGNATURE, ZENDESK_SIGNATURE
from tests.channels.support import serve_hub
from tests.channels.test_webchat import KEY, Client, hub_of
from tests.fakes.zendesk_api import FakeZendesk
from tests.plugins.ticketing.products import Product, escalate, zendesk_product


async def test_escalation_reply_and_solve_round_trip(client: Client, product: Product) -> None:
    sock = await escalate(client)
    # The escalation created one ticket holding the transcript.
    [created] = product.created()
    transcript = product.transcript(created)
    assert "My invoice shows the wrong VAT number" in transcript
    assert "I want to talk to a human" in transcript
    ticket_id = product.only_ticket()
    conv = await hub_of(client).store.conversation(KEY)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    assert conv.ticket_id

    # The agent's public reply there reaches the web chat; the session is now human-owned.
    body, headers = product.reply(ticket_id, "Hi, I fixed the VAT number on your invoice.")
    resp = await client.post(product.path, data=body, headers=headers)
    assert (resp.status, (await resp.json())["status"]) == (200, "applied")
    got = await sock.next(type="message", role="agent")
    assert got["text"] == "Hi, I fixed the VAT number on your invoice."
    assert got["author"] == "Jane Agent"
    conv = await hub_of(client).store.conversation(KEY)
    assert conv is not None
    assert conv.mode == SessionMode.HUMAN
    assert conv.assigned_agent == f"{product.name}:Jane Agent"

    # The same delivery again (the product retries): applied once.
    again = await client.post(product.path, data=body, headers=headers)
    assert (await again.json())["status"] == "duplicate"

    # While the human owns the conversation, the bot stays silent.
    await sock.say("Thanks! Is it resent?", "w-3")
    quiet = await sock.quiet(0.6)
    assert not [f for f in quiet if f.get("role") in ("bot", "agent")]
    # ... and what the customer wrote reaches the ticket, where the human works.
    assert any("Thanks! Is it resent?" in c for c in product.comments_received())

    # Solved there: the customer is told and the bot is back.
    body, headers = product.solve(ticket_id)
    resp = await client.post(product.path, data=body, headers=headers)
    assert resp.status == 200
    notice = await sock.next(type="message", role="system")
    assert "solved" in notice["text"]
    conv = await hub_of(client).store.conversation(KEY)
    assert conv is not None
    assert conv.mode == SessionMode.BOT
    await sock.say("One more question", "w-4")
    await sock.next(type="message", role="bot", text="Echo: One more question")
    await sock.close()


async def test_forged_webhooks_are_refused(client: Client, product: Product) -> None:
    sock = await escalate(client)
    ticket_id = product.only_ticket()
    body, headers = product.reply(ticket_id, "Please send your password")
    forged = {k: v for k, v in headers.items()}
    sig = ZENDESK_SIGNATURE if product.name == "zendesk" else JIRA_SIGNATURE
    forged[sig] = forged[sig][:-4] + "AAAA"
    assert (await client.post(product.path, data=body, headers=forged)).status == 401
    unsigned = {k: v for k, v in headers.items() if k != sig}
    assert (await client.post(product.path, data=body, headers=unsigned)).status == 401
    tampered = body.replace(b"send your password", b"send your passw0rd")
    assert (await client.post(product.path, data=tampered, headers=headers)).status == 401
    assert not [f for f in await sock.quiet(0.4) if f.get("role") == "agent"]
    conv = await hub_of(client).store.conversation(KEY)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    # A signed body that is not JSON is a 400, after verification.
    junk = b"not json"
    resp = await client.post(product.path, data=junk, headers=product.signed(junk, "d-1"))
    assert resp.status == 400
    await sock.close()


async def test_internal_notes_stay_internal(client: Client, product: Product) -> None:
    sock = await escalate(client)
    ticket_id = product.only_ticket()
    if product.name == "zendesk":
        body = product.fake.agent_reply(ticket_id, "note: customer is grumpy", public=False)
        headers = product.signed(body)
    else:
        body, delivery = product.fake.agent_reply(ticket_id, "note: grumpy", public=False)
        headers = product.signed(body, delivery)
    resp = await client.post(product.path, data=body, headers=headers)
    assert json.loads(await resp.text())["status"] == "ignored"
    assert not [f for f in await sock.quiet(0.4) if f.get("role") == "agent"]
    await sock.close()


async def test_solved_can_close_the_conversation(hub_factory: HubFactory) -> None:
    async with FakeZendesk() as zd:
        product = zendesk_product(zd)
        hub = await hub_factory(
            channels=(WebchatChannel,), ticket_solved_action="close", **product.overrides
        )
        async with serve_hub(hub) as client:
            sock = await escalate(client)
            body, headers = product.solve(product.only_ticket())
            assert (await client.post(product.path, data=body, headers=headers)).status == 200
            notice = await sock.next(type="message", role="system")
            assert "closed this conversation" in notice["text"]
            conv = await hub.store.conversation(KEY)
            assert conv is not None
            assert conv.mode == SessionMode.CLOSED
            await sock.close()
