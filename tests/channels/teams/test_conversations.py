"""End to end: conversations, welcome, escalation round trip, typing, throttling."""

from __future__ import annotations

import asyncio

import pytest

from bot.auth import add_agent
from bot.envelope import OutboundKind, OutboundMessage, session_key
from bot.errors import RateLimited
from bot.store.base import SessionMode
from channels.teams.plugin import TeamsChannel
from channels.teams.references import REF_META_KEY
from tests.channels.teams.harness import (
    AAD_USER,
    CHANNEL_ID,
    GROUP_CONV,
    PERSONAL_CONV,
    TENANT,
    TeamsHarness,
    actions_of,
    activity,
    bot_account,
    channel_activity,
)


async def test_channel_reply_chain_is_one_session_answered_in_the_thread(
    teams: TeamsHarness,
) -> None:
    root = "1714641611000"
    resp = await teams.post(
        channel_activity(teams.fake, root=root, text="is the VPN down?", event_id=root)
    )
    body = await resp.json()
    key = session_key("teams", TENANT, chat=CHANNEL_ID, thread=root)
    assert body["session_key"] == key
    thread = f"{CHANNEL_ID};messageid={root}"
    answer = await teams.next_posted(conversation_id=thread)
    assert answer.body["text"] == "Echo: is the VPN down?"  # the @mention is stripped
    assert answer.reply_to == root
    [msg] = [m for m in await teams.hub.store.messages(key) if m.role == "customer"]
    assert msg.text == "is the VPN down?"


async def test_group_chat_is_one_session_per_conversation(teams: TeamsHarness) -> None:
    bot = bot_account(teams.fake)
    doc = activity(
        teams.fake,
        text=f"<at>{bot['name']}</at> invoice?",
        event_id="g-1",
        conversation={"isGroup": True, "conversationType": "groupChat", "id": GROUP_CONV},
        entities=[{"type": "mention", "text": f"<at>{bot['name']}</at>", "mentioned": bot}],
    )
    body = await (await teams.post(doc)).json()
    assert body["session_key"] == session_key("teams", TENANT, chat=GROUP_CONV)
    answer = await teams.next_posted(conversation_id=GROUP_CONV)
    assert answer.body["text"] == "Echo: invoice?"


async def test_personal_chat_key_uses_the_aad_object_id_and_stores_the_reference(
    teams: TeamsHarness,
) -> None:
    await teams.customer_says("hi", event_id="p-1")
    await teams.next_delivery()
    conv = await teams.hub.store.conversation(teams.session_key)
    assert conv is not None
    assert conv.account == TENANT
    assert conv.customer.id == AAD_USER
    assert conv.customer.verified
    ref = conv.meta[REF_META_KEY]
    assert ref["conversation"]["id"] == PERSONAL_CONV
    assert ref["serviceUrl"] == teams.fake.service_url


def _welcome_update(teams: TeamsHarness, *, members: list[dict[str, str]]) -> dict[str, object]:
    return activity(teams.fake, type="conversationUpdate", membersAdded=members)


async def test_welcome_is_sent_once_per_conversation(teams: TeamsHarness) -> None:
    bot = bot_account(teams.fake)
    assert (await teams.post(_welcome_update(teams, members=[bot]))).status == 200
    welcome = await teams.next_posted()
    assert "support assistant" in welcome.body["text"]
    assert actions_of(welcome) == ["handoff.request"]
    assert welcome.reply_to is None
    # Teams sends the update again (reinstall, retry): no second welcome
    assert (await teams.post(_welcome_update(teams, members=[bot]))).status == 200
    with pytest.raises(TimeoutError):
        await teams.next_posted(timeout_s=0.5)
    assert teams.hub.agent.turns == []


async def test_no_welcome_when_only_people_join(teams: TeamsHarness) -> None:
    doc = _welcome_update(teams, members=[{"id": "29:someone-else"}])
    assert (await teams.post(doc)).status == 200
    with pytest.raises(TimeoutError):
        await teams.next_posted(timeout_s=0.4)


async def test_escalation_round_trip_with_a_proactive_agent_reply(teams: TeamsHarness) -> None:
    hub = teams.hub
    await teams.customer_says("my invoice is wrong", event_id="e-1")
    first = await teams.next_delivery()
    assert first.text == "Echo: my invoice is wrong"
    # the customer presses "Talk to a person" on the card: an Action.Submit message
    press = activity(
        teams.fake, event_id="e-2", value={"action": "handoff.request"}, replyToId="x"
    )
    assert (await teams.post(press)).status == 200
    notice = await teams.next_posted()
    assert "handing this conversation to a person" in notice.body["text"]
    conv = await hub.store.conversation(teams.session_key)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    # while queued, the bot stays silent
    await teams.customer_says("hello?", event_id="e-3")
    agent = await add_agent(hub.store, "dana", "a-long-password-123", "Dana from Support")
    await hub.handoff.claim(teams.session_key, agent)
    claimed = await teams.next_posted()  # the "Dana joined" notice
    assert claimed.body["type"] == "message"
    await hub.handoff.reply(teams.session_key, agent, "I fixed your invoice.")
    reply = await teams.next_posted()
    assert reply.body["text"] == "**Dana from Support:** I fixed your invoice."
    assert reply.reply_to is None  # proactive: POST /v3/conversations/{id}/activities
    assert reply.conversation_id == PERSONAL_CONV
    assert reply.body["recipient"]["id"].startswith("29:")
    await hub.handoff.resolve(teams.session_key, agent)
    closed = await teams.next_posted()
    assert "handed you back to our assistant" in closed.body["text"]
    survey = await teams.next_posted()  # the CSAT survey (bot.desk.csat)
    assert survey.body["text"].startswith("How satisfied are you")
    await teams.customer_says("thanks, one more thing", event_id="e-4")
    again = await teams.next_posted()
    assert again.body["text"] == "Echo: thanks, one more thing"
    assert again.reply_to == "e-4"
    assert [t.messages[-1].event_id for t in hub.agent.turns] == ["e-1", "e-4"]


async def test_typing_is_shown_while_the_turn_runs(teams: TeamsHarness) -> None:
    teams.hub.agent.delay_s = 0.4
    await teams.customer_says("slow question", event_id="t-1")
    _, typing = await teams.fake.wait_for(lambda p: p.type == "typing")
    answer = await teams.next_posted()
    assert teams.fake.posted.index(typing) < teams.fake.posted.index(answer)
    assert answer.body["text"] == "Echo: slow question"


async def test_throttling_raises_rate_limited_with_retry_after(teams: TeamsHarness) -> None:
    await teams.customer_says("hi", event_id="r-1")
    await teams.next_delivery()
    channel = teams.hub.channels["teams"]
    assert isinstance(channel, TeamsChannel)
    teams.fake.fail_next(429, headers={"Retry-After": "7"})
    out = OutboundMessage(session_key=teams.session_key, text="later", kind=OutboundKind.NOTICE)
    with pytest.raises(RateLimited) as caught:
        await channel.send(out)
    assert caught.value.retry_after == 7.0


async def test_the_hub_retries_a_throttled_send_after_retry_after(teams: TeamsHarness) -> None:
    await teams.customer_says("hi", event_id="r-2")
    await teams.next_delivery()
    teams.fake.fail_next(429, headers={"Retry-After": "1"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    await teams.hub.deliver(
        OutboundMessage(session_key=teams.session_key, text="made it", kind=OutboundKind.NOTICE)
    )
    got = await teams.next_posted()
    assert got.body["text"] == "made it"
    assert loop.time() - started >= 0.9
