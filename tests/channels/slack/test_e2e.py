"""End to end: signed Slack requests into a served hub, replies at the fake Slack Web API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import pytest

from bot.agent import AgentReply
from bot.auth import add_agent
from bot.envelope import TALK_TO_HUMAN, Citation, OutboundKind, OutboundMessage
from bot.sla import parse_policy
from bot.store.base import Role, SessionMode
from channels.memory.pytest_plugin import ScriptedAgent
from channels.slack.translate import slack_session_key
from tests.channels.slack.conftest import SlackServer
from tests.channels.slack.harness import (
    BOT_USER,
    CUSTOMER,
    DM_CHANNEL,
    SECRET,
    TEAM,
    block_action,
    channel_message,
    dm,
    event_callback,
    mention,
    post_signed,
)
from tests.fakes.slack_api import FakeSlackApi

DM_KEY = slack_session_key(TEAM, channel=DM_CHANNEL, user=CUSTOMER, is_direct=True, thread_ts=None)


async def customer_count(hub: object) -> int:
    stored = await hub.store.messages(DM_KEY)  # type: ignore[attr-defined]
    return sum(1 for m in stored if m.role == Role.CUSTOMER)


async def test_url_verification_is_answered_with_the_challenge(
    slack_server: SlackServer,
) -> None:
    _, client = await slack_server()
    body = {
        "token": "x",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    status, text = await post_signed(client, body)
    assert status == 200
    assert json.loads(text) == {"challenge": body["challenge"]}


async def test_dm_is_answered_in_the_dm_with_citation_and_button(
    slack_server: SlackServer, slack_api: FakeSlackApi, scripted_agent: ScriptedAgent
) -> None:
    scripted_agent.replies.append(
        AgentReply(
            text="Use **Settings → Security** & <b>reset</b>.",
            citations=[Citation(doc_id="pw", title="Passwords", url="https://d.example/pw")],
            actions=[TALK_TO_HUMAN],
        )
    )
    hub, client = await slack_server()
    status, _ = await post_signed(client, event_callback(dm("reset my password?"), event_id="Ev1"))
    assert status == 200
    [call] = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL)
    assert call.token == "xoxb-T111-test"
    assert call.args.get("thread_ts") is None
    assert call.section_text == "Use *Settings → Security* &amp; &lt;b&gt;reset&lt;/b&gt;."
    [context] = [b for b in call.blocks if b["type"] == "context"]
    assert context["elements"][0]["text"].endswith("<https://d.example/pw|Passwords>")
    assert call.button_ids == ["handoff.request"]
    conv = await hub.store.conversation(DM_KEY)
    assert conv is not None
    assert conv.customer.id == CUSTOMER
    assert conv.customer.verified


async def test_retries_and_repeated_event_ids_are_answered_once(
    slack_server: SlackServer, slack_api: FakeSlackApi, scripted_agent: ScriptedAgent
) -> None:
    hub, client = await slack_server()
    body = event_callback(dm("where is my order?"), event_id="EvRetry")
    assert (await post_signed(client, body))[0] == 200
    for n in ("1", "2"):
        status, _ = await post_signed(
            client, body, headers={"X-Slack-Retry-Num": n, "X-Slack-Retry-Reason": "http_timeout"}
        )
        assert status == 200
    await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL)
    await asyncio.sleep(0.3)
    assert len(slack_api.of("chat.postMessage", DM_CHANNEL)) == 1
    assert await customer_count(hub) == 1
    assert len(scripted_agent.turns) == 1


async def test_channel_mentions_live_in_their_thread(
    slack_server: SlackServer, slack_api: FakeSlackApi, scripted_agent: ScriptedAgent
) -> None:
    hub, client = await slack_server()
    first = mention("how do I export?", user="UALICE", channel="CGEN")
    other = mention("and me?", user="UBOB", channel="CGEN")
    for i, event in enumerate((first, other)):
        assert (await post_signed(client, event_callback(event, event_id=f"EvM{i}")))[0] == 200
    calls = await slack_api.wait_for("chat.postMessage", channel="CGEN", count=2)
    assert {c.args["thread_ts"] for c in calls} == {first["ts"], other["ts"]}
    # a reply in Alice's thread without a mention continues her session
    follow = channel_message(
        "thanks, and csv?", user="UALICE", channel="CGEN", thread_ts=first["ts"]
    )
    assert (await post_signed(client, event_callback(follow, event_id="EvM2")))[0] == 200
    calls = await slack_api.wait_for("chat.postMessage", channel="CGEN", count=3)
    assert calls[2].args["thread_ts"] == first["ts"]
    assert calls[2].section_text == "Echo: thanks, and csv?"
    key = slack_session_key(
        TEAM, channel="CGEN", user="UALICE", is_direct=False, thread_ts=first["ts"]
    )
    texts = [m.text for m in await hub.store.messages(key) if m.role == Role.CUSTOMER]
    assert texts == ["how do I export?", "thanks, and csv?"]
    # noise: an unmentioned top-level message, an edit, a join, another bot, our own echo
    noise = [
        channel_message("lunch?", user="UCAROL", channel="CGEN"),
        {**channel_message("x", user="UALICE", channel="CGEN"), "subtype": "message_changed"},
        {**channel_message("joined", user="UDAN", channel="CGEN"), "subtype": "channel_join"},
        {
            **channel_message("beep", user="UOTHER", channel="CGEN", thread_ts=first["ts"]),
            "bot_id": "BOTHER",
        },
        channel_message("echo", user=BOT_USER, channel="CGEN", thread_ts=first["ts"]),
        dm("from myself", user=BOT_USER),
    ]
    for i, event in enumerate(noise):
        assert (await post_signed(client, event_callback(event, event_id=f"EvN{i}")))[0] == 200
    await asyncio.sleep(0.3)
    assert len(slack_api.of("chat.postMessage")) == 3
    assert len(scripted_agent.turns) == 3


async def test_other_bots_are_answered_when_allowed(
    slack_server: SlackServer, slack_api: FakeSlackApi
) -> None:
    _, client = await slack_server(slack_allow_bots=True)
    event = {**dm("status?", user="UOTHERBOT"), "bot_id": "BOTHER"}
    assert (await post_signed(client, event_callback(event, event_id="EvB")))[0] == 200
    [call] = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL)
    assert call.section_text == "Echo: status?"


async def test_rate_limit_is_honoured_and_a_long_answer_is_split_once(
    slack_server: SlackServer, slack_api: FakeSlackApi, scripted_agent: ScriptedAgent
) -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 150 for i in range(8)]
    scripted_agent.replies.append(AgentReply(text="\n\n".join(paragraphs)))
    _, client = await slack_server()
    # the second part is rate limited once: the hub waits Retry-After and resumes at part two
    original = slack_api._answer
    seen = {"n": 0}

    def answer(method: str, token: str | None, args: dict[str, object]) -> dict[str, object]:
        if method == "chat.postMessage":
            seen["n"] += 1
            if seen["n"] == 1:
                slack_api.fail_next("chat.postMessage", 429, 0.3)
        return original(method, token, args)

    slack_api._answer = answer  # type: ignore[method-assign]
    started = time.monotonic()
    assert (await post_signed(client, event_callback(dm("long please"), event_id="EvL")))[0] == 200
    await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=3)
    await asyncio.sleep(0.4)
    calls = slack_api.of("chat.postMessage", DM_CHANNEL)
    assert len(calls) == 3, [c.metadata for c in calls]
    assert time.monotonic() - started >= 0.3
    assert all(len(c.section_text) <= 3000 for c in calls)
    joined = "\n\n".join(c.section_text for c in calls)
    assert all(f"Paragraph {i}:" in joined for i in range(8))
    assert [c.metadata["event_payload"]["part"] for c in calls] == [0, 1, 2]


async def test_full_escalation_round_trip_in_a_dm(
    slack_server: SlackServer, slack_api: FakeSlackApi, scripted_agent: ScriptedAgent
) -> None:
    hub, client = await slack_server()
    assert (await post_signed(client, event_callback(dm("hello"), event_id="EvE1")))[0] == 200
    await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL)
    # the customer presses "Talk to a person" under the answer
    press = block_action(
        "handoff.request",
        user=CUSTOMER,
        channel=DM_CHANNEL,
        message_ts="1700000000.000001",
        value=str(DM_KEY),
    )
    assert (await post_signed(client, press))[0] == 200
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=2)
    assert calls[1].metadata["event_payload"]["kind"] == "handoff"
    conv = await hub.store.conversation(DM_KEY)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    # an agent claims and replies from the console
    agent = await add_agent(hub.store, "grace", "correct horse battery", "Grace")
    await hub.handoff.claim(DM_KEY, agent)
    await hub.handoff.reply(DM_KEY, agent, "Hi, I'm **Grace**. Let me check.")
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=4)
    assert "Grace from our team joined" in calls[2].section_text
    assert calls[3].section_text == "*Grace:* Hi, I'm *Grace*. Let me check."
    assert calls[3].metadata["event_payload"]["kind"] == "agent"
    # while the human owns it the bot stays silent
    assert (await post_signed(client, event_callback(dm("thanks!"), event_id="EvE2")))[0] == 200
    await asyncio.sleep(0.3)
    assert len(slack_api.of("chat.postMessage", DM_CHANNEL)) == 4
    await hub.handoff.resolve(DM_KEY, agent)
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=5)
    assert "handed you back" in calls[4].section_text
    # then the CSAT survey (bot.desk.csat), with its five rating buttons
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=6)
    assert calls[5].section_text.startswith("How satisfied are you")
    assert calls[5].button_ids[:5] == [f"csat.{n}" for n in range(1, 6)]
    # a message that is not a rating goes to the bot as usual
    assert (await post_signed(client, event_callback(dm("one more"), event_id="EvE3")))[0] == 200
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=7)
    assert calls[6].section_text == "Echo: one more"


async def test_agents_channel_desk_round_trip(
    slack_server: SlackServer, slack_api: FakeSlackApi, scripted_agent: ScriptedAgent
) -> None:
    hub, client = await slack_server(slack_agents_channel="CDESK")
    assert (await post_signed(client, event_callback(dm("hi"), event_id="EvD0")))[0] == 200
    await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL)
    body = event_callback(dm("I want to talk to a person"), event_id="EvD1")
    assert (await post_signed(client, body))[0] == 200
    [root] = await slack_api.wait_for("chat.postMessage", channel="CDESK")
    assert root.args.get("thread_ts") is None
    assert root.button_ids == ["switchboard.desk.claim", "switchboard.desk.resolve"]
    assert "talk to a person" in json.dumps(root.blocks)
    root_ts = next(
        ts for ts, key in hub.channels["slack"].desk.sessions_by_ts.items() if key == DM_KEY
    )
    # Ada presses Claim in the agents' channel
    press = block_action(
        "switchboard.desk.claim",
        user="UAGENT",
        channel="CDESK",
        message_ts=root_ts,
        value=str(DM_KEY),
    )
    assert (await post_signed(client, press))[0] == 200
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=3)
    assert "Ada from our team joined" in calls[-1].section_text
    conv = await hub.store.conversation(DM_KEY)
    assert conv is not None
    assert conv.mode == SessionMode.HUMAN
    assert conv.assigned_agent == "slack.T111.UAGENT"
    # Ada replies in the thread: it reaches the customer's DM
    reply = channel_message(
        "Hello from *Ada*, on it", user="UAGENT", channel="CDESK", thread_ts=root_ts
    )
    assert (await post_signed(client, event_callback(reply, event_id="EvD2")))[0] == 200
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=4)
    assert calls[-1].section_text == "*Ada:* Hello from *Ada*, on it"
    # the customer's answer is mirrored into the thread
    assert (await post_signed(client, event_callback(dm("great thanks"), event_id="EvD3")))[
        0
    ] == 200
    for _ in range(50):
        mirrored = [
            c
            for c in slack_api.of("chat.postMessage", "CDESK")
            if c.args.get("thread_ts") == root_ts and "great thanks" in c.args["text"]
        ]
        if mirrored:
            break
        await asyncio.sleep(0.05)
    assert mirrored
    # Ada's own reply is not echoed back into the thread
    assert not [
        c
        for c in slack_api.of("chat.postMessage", "CDESK")
        if "on it" in c.args["text"] and c.args.get("thread_ts") == root_ts
    ]
    # Resolve hands back to the bot; the root message loses its buttons
    press = block_action(
        "switchboard.desk.resolve",
        user="UAGENT",
        channel="CDESK",
        message_ts=root_ts,
        value=str(DM_KEY),
    )
    assert (await post_signed(client, press))[0] == 200
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=5)
    assert "handed you back" in calls[-1].section_text
    updates = await slack_api.wait_for("chat.update", channel="CDESK", count=2)
    assert updates[-1].args["ts"] == root_ts
    assert updates[-1].button_ids == []
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=6)
    assert calls[-1].section_text.startswith("How satisfied are you")  # the CSAT survey
    assert (await post_signed(client, event_callback(dm("bot again?"), event_id="EvD4")))[0] == 200
    calls = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL, count=7)
    assert calls[-1].section_text == "Echo: bot again?"


async def test_sla_breach_is_said_in_the_agents_channel_thread(
    slack_server: SlackServer, slack_api: FakeSlackApi, scripted_agent: ScriptedAgent
) -> None:
    # The hub's own sweeper (every 0.1 s here) finds the breach.
    hub, client = await slack_server(slack_agents_channel="CDESK", assignment_sweep_s=0.1)
    await hub.store.save_sla_policy(
        parse_policy({"name": "quick", "first_response_s": 1, "resolution_s": 60})
    )
    body = event_callback(dm("I want to talk to a person"), event_id="EvS1")
    assert (await post_signed(client, body))[0] == 200
    await slack_api.wait_for("chat.postMessage", channel="CDESK")
    root_ts = next(
        ts for ts, key in hub.channels["slack"].desk.sessions_by_ts.items() if key == DM_KEY
    )
    for _ in range(60):
        said = [
            c
            for c in slack_api.of("chat.postMessage", "CDESK")
            if c.args.get("thread_ts") == root_ts and "SLA breached" in c.args["text"]
        ]
        if said:
            break
        await asyncio.sleep(0.05)
    assert len(said) == 1
    assert "first response" in said[0].args["text"]
    assert "quick" in said[0].args["text"]


@pytest.mark.parametrize(
    "case", ["wrong_signature", "stale", "truncated", "huge", "no_headers", "garbage"]
)
async def test_bad_requests_are_refused_and_nothing_is_stored(
    slack_server: SlackServer, slack_api: FakeSlackApi, case: str
) -> None:
    hub, client = await slack_server()
    body = json.dumps(event_callback(dm("sneaky"), event_id=f"EvBad-{case}")).encode()
    expected = {
        "wrong_signature": 401,
        "stale": 401,
        "truncated": 400,
        "huge": 413,
        "no_headers": 401,
        "garbage": 401,
    }[case]
    if case == "wrong_signature":
        status, _ = await post_signed(client, body, secret="not-the-secret")
    elif case == "stale":
        status, _ = await post_signed(client, body, timestamp=int(time.time()) - 6 * 60)
    elif case == "truncated":
        status, _ = await post_signed(client, body[: len(body) // 2])
    elif case == "huge":
        status, _ = await post_signed(client, body[:-1] + b', "pad": "' + b"x" * 5_000_000 + b'"}')
    elif case == "garbage":  # signed like Slack would, over bytes that are not UTF-8
        data, ts = b"\xff\xfe\x00garbage", str(int(time.time()))
        mac = hmac.new(SECRET.encode(), b"v0:" + ts.encode() + b":" + data, hashlib.sha256)
        resp = await client.post(
            "/slack/events",
            data=data,
            headers={
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": "v0=" + mac.hexdigest(),
            },
        )
        status = resp.status
    else:
        resp = await client.post(
            "/slack/events", data=body, headers={"Content-Type": "application/json"}
        )
        status = resp.status
    assert status == expected
    await asyncio.sleep(0.1)
    assert await hub.store.conversation(DM_KEY) is None
    assert slack_api.of("chat.postMessage") == []


async def test_send_converts_rate_limits_and_failures(
    slack_server: SlackServer, slack_api: FakeSlackApi
) -> None:
    from bot.errors import ChannelUnavailable, RateLimited
    from channels.slack.web_api import SlackApiFailed

    hub, _ = await slack_server(slack_bot_token="T111=xoxb-T111-test")
    channel = hub.channels["slack"]
    out = OutboundMessage(session_key=DM_KEY, text="hi", kind=OutboundKind.NOTICE)
    slack_api.fail_next("chat.postMessage", 429, 7.0)
    with pytest.raises(RateLimited) as info:
        await channel.send(out)
    assert info.value.retry_after == 7.0
    slack_api.fail_next("chat.postMessage", 503)
    with pytest.raises(ChannelUnavailable):
        await channel.send(out)
    bad = OutboundMessage(
        session_key=slack_session_key(
            "T999", channel="C1", user="U1", is_direct=False, thread_ts="1.2"
        ),
        text="hi",
    )
    with pytest.raises(Exception, match="not installed"):
        await channel.send(bad)
    await channel.send(out)  # no conversation stored: the DM key's user id is the address
    [call] = slack_api.of("chat.postMessage", CUSTOMER)
    assert call.section_text == "hi"
    assert SlackApiFailed("chat.postMessage", "x").error == "x"


async def test_signing_secret_from_the_test_vector_is_what_bolt_checks(
    slack_server: SlackServer,
) -> None:
    _, client = await slack_server()
    assert SECRET == "8f742231b10e8888abcd99yyyzzz85a5"
    status, _ = await post_signed(
        client, {"type": "url_verification", "challenge": "c"}, secret=SECRET[::-1]
    )
    assert status == 401
