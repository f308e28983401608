"""The Discord channel end to end: real discord.py client, fake gateway and REST API, real hub."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from bot.agent import AgentReply
from bot.auth import add_agent
from bot.envelope import TALK_TO_HUMAN, Citation, OutboundMessage, SessionKey, session_key
from bot.errors import ConfigError, RateLimited
from bot.store.base import Role, SessionMode
from channels.discord.plugin import DiscordChannel
from channels.memory.pytest_plugin import ScriptedAgent, make_settings
from tests.channels.discord.frames import (
    CHANNEL,
    CUSTOMER,
    DM_CHANNEL,
    GUILD,
    button_interaction,
    message,
    support_interaction,
)
from tests.channels.discord.harness import IngestSpy
from tests.fakes.discord_api import APPLICATION_ID, BOT_ID, FakeDiscord, RateLimitPlan

from .conftest import DiscordHubFactory

if TYPE_CHECKING:
    from bot.hub import Hub

DM = DM_CHANNEL
DM_KEY = session_key("discord", BOT_ID, dm_peer=CUSTOMER)


def thread_key(thread: str, channel: str = CHANNEL) -> SessionKey:
    return session_key("discord", GUILD, chat=channel, thread=thread)


def plugin_of(hub: Hub) -> DiscordChannel:
    channel = hub.channels["discord"]
    assert isinstance(channel, DiscordChannel)
    return channel


async def test_login_identifies_with_the_intents_and_registers_support(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    [identify] = fake_discord.identified
    # guilds (1<<0) | guild messages (1<<9) | direct messages (1<<12) | message content (1<<15)
    assert identify["intents"] == (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15)
    [sync] = fake_discord.calls("PUT", rf"/applications/{APPLICATION_ID}/commands")
    [command] = sync.json
    assert command["name"] == "support"
    assert [o["name"] for o in command["options"]] == ["question"]
    assert command["options"][0]["required"] is False
    assert plugin_of(discord_hub).bot_id == BOT_ID


async def test_direct_message_is_answered_in_the_dm_with_typing_first(
    fake_discord: FakeDiscord, discord_hub: Hub, scripted_agent: ScriptedAgent
) -> None:
    scripted_agent.delay_s = 0.6  # typing starts once a turn ran typing_delay_s (0.25 s)
    await fake_discord.dispatch(
        "MESSAGE_CREATE", message("1301", "where is my parcel?", channel_id=DM)
    )
    [post] = await fake_discord.wait_for("POST", rf"/channels/{DM}/messages")
    assert post.json["content"] == "Echo: where is my parcel?"
    assert post.json["allowed_mentions"]["parse"] == []
    typing = fake_discord.calls("POST", rf"/channels/{DM}/typing")
    assert typing
    assert typing[0].at < post.at
    [customer] = [m for m in await discord_hub.store.messages(DM_KEY) if m.role == Role.CUSTOMER]
    assert (customer.event_id, customer.text) == ("1301", "where is my parcel?")


async def test_a_mention_opens_a_thread_and_follow_ups_need_no_mention(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    fake_discord.add_text_channel(CHANNEL, GUILD)
    await fake_discord.dispatch(
        "MESSAGE_CREATE",
        message("1310", "my invoice is wrong", guild_id=GUILD, mention_bot=True),
    )
    [start] = await fake_discord.wait_for("POST", rf"/channels/{CHANNEL}/messages/1310/threads")
    assert start.json["name"] == "my invoice is wrong"
    assert start.json["auto_archive_duration"] == 1440
    [answer] = await fake_discord.wait_for("POST", r"/channels/1310/messages")
    assert answer.json["content"] == "Echo: my invoice is wrong"
    assert not fake_discord.calls("POST", rf"/channels/{CHANNEL}/messages"), "answered in channel"

    await fake_discord.dispatch(
        "MESSAGE_CREATE", message("1311", "it says 40 EUR", channel_id="1310", guild_id=GUILD)
    )
    answers = await fake_discord.wait_for("POST", r"/channels/1310/messages", count=2)
    assert answers[1].json["content"] == "Echo: it says 40 EUR"
    stored = await discord_hub.store.messages(thread_key("1310"))
    assert [m.event_id for m in stored if m.role == Role.CUSTOMER] == ["1310", "1311"]
    assert len(fake_discord.calls("POST", r"/channels/\d+/messages/\d+/threads")) == 1


async def test_after_a_restart_a_bot_thread_is_recognised_by_its_owner(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    fake_discord.add_thread("1320", GUILD, CHANNEL, owner_id=BOT_ID)
    fake_discord.add_thread("1321", GUILD, CHANNEL, owner_id="5")
    await fake_discord.dispatch(
        "MESSAGE_CREATE",
        message("1322", "someone else's thread", channel_id="1321", guild_id=GUILD),
    )
    await fake_discord.dispatch(
        "MESSAGE_CREATE", message("1323", "still there?", channel_id="1320", guild_id=GUILD)
    )
    [answer] = await fake_discord.wait_for("POST", r"/channels/1320/messages")
    assert answer.json["content"] == "Echo: still there?"
    assert not fake_discord.calls("POST", r"/channels/1321/messages")
    assert await discord_hub.store.conversation(thread_key("1321")) is None


async def test_own_bot_and_unmentioned_messages_are_ignored(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    spy = IngestSpy(discord_hub)
    fake_discord.add_text_channel(CHANNEL, GUILD)
    for frame_data in (
        message("1330", "Echo: hello", channel_id=DM, author_id=BOT_ID),
        message("1331", "beep", channel_id=DM, author_id="66", bot=True),
        message("1332", "anyone here?", guild_id=GUILD),
        message("1333", "", guild_id=GUILD),
    ):
        await fake_discord.dispatch("MESSAGE_CREATE", frame_data)
    # a DM after them proves the inbox worker processed the ignored ones first
    await fake_discord.dispatch("MESSAGE_CREATE", message("1334", "ping", channel_id=DM))
    await spy.wait("1334")
    assert [m.event_id for m in spy.messages] == ["1334"]
    await fake_discord.wait_for("POST", rf"/channels/{DM}/messages")
    assert not fake_discord.calls("POST", rf"/channels/{CHANNEL}/messages/\d+/threads")
    assert len(fake_discord.calls("POST", r"/channels/\d+/messages")) == 1


async def test_malformed_gateway_frames_are_dropped_and_the_client_keeps_working(
    fake_discord: FakeDiscord, discord_hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    spy = IngestSpy(discord_hub)
    await fake_discord.dispatch("MESSAGE_CREATE", {"id": "1340", "channel_id": DM, "content": "x"})
    await fake_discord.dispatch(
        "MESSAGE_CREATE", message("1341", "after the bad one", channel_id=DM)
    )
    await spy.wait("1341")
    assert [m.event_id for m in spy.messages] == ["1341"]
    assert any(r.msg == "discord.payload_invalid" for r in caplog.records)
    assert await discord_hub.store.conversation(DM_KEY) is not None
    stored = await discord_hub.store.messages(DM_KEY)
    assert [m.event_id for m in stored if m.role == Role.CUSTOMER] == ["1341"]


async def test_support_command_opens_a_thread_with_a_welcome(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    fake_discord.add_text_channel(CHANNEL, GUILD)
    await fake_discord.dispatch(
        "INTERACTION_CREATE", support_interaction("1350", question="Can I change my plan?")
    )
    [callback] = await fake_discord.wait_for("POST", r"/interactions/1350/[^/]+/callback")
    assert callback.json["type"] == 5  # deferred channel message with source
    assert callback.json["data"]["flags"] == 64  # ephemeral
    [created] = await fake_discord.wait_for("POST", rf"/channels/{CHANNEL}/threads")
    assert created.json["name"] == "Can I change my plan?"
    assert created.json["type"] == 11
    thread = next(c for c in fake_discord.channels.values() if c.get("parent_id") == CHANNEL)
    posts = await fake_discord.wait_for("POST", rf"/channels/{thread['id']}/messages", count=2)
    assert f"<@{CUSTOMER}>" in posts[0].json["content"]
    assert posts[0].json["allowed_mentions"]["parse"] == ["users"]
    assert posts[1].json["content"] == "Echo: Can I change my plan?"
    [edit] = await fake_discord.wait_for(
        "PATCH", rf"/webhooks/{APPLICATION_ID}/[^/]+/messages/@original"
    )
    assert edit.json["content"] == f"Your support thread: <#{thread['id']}>"
    stored = await discord_hub.store.messages(thread_key(thread["id"]))
    assert [(m.event_id, m.text) for m in stored if m.role == Role.CUSTOMER] == [
        ("1350", "Can I change my plan?")
    ]


async def test_long_answers_are_split_with_sources_and_buttons_on_the_last_part(
    fake_discord: FakeDiscord, discord_hub: Hub, scripted_agent: ScriptedAgent
) -> None:
    long_text = "\n\n".join(f"Step {n}: " + "configure the widget " * 20 for n in range(12))
    assert len(long_text) > 4000
    scripted_agent.replies.append(
        AgentReply(
            text=long_text,
            citations=[
                Citation(doc_id="w", title="Widget guide", url="https://docs.example.com/w"),
                Citation(doc_id="faq", title="FAQ"),
            ],
            actions=[TALK_TO_HUMAN],
        )
    )
    await fake_discord.dispatch("MESSAGE_CREATE", message("1360", "how to set up?", channel_id=DM))
    posts = await fake_discord.wait_for("POST", rf"/channels/{DM}/messages", count=3)
    await asyncio.sleep(0.1)
    posts = fake_discord.calls("POST", rf"/channels/{DM}/messages")
    assert len(posts) == 3
    contents = [p.json["content"] for p in posts]
    assert all(len(c) <= 2000 for c in contents)
    assert " ".join("\n\n".join(contents).split()) == " ".join(long_text.split())
    assert [bool(p.json.get("embeds")) for p in posts] == [False, False, True]
    [embed] = posts[-1].json["embeds"]
    assert embed["title"] == "Sources"
    assert embed["description"] == "1. [Widget guide](https://docs.example.com/w)\n2. FAQ"
    [row] = posts[-1].json["components"]
    assert [(b["custom_id"], b["label"]) for b in row["components"]] == [
        ("handoff.request", "Talk to a person")
    ]
    assert not posts[0].json.get("components")
    assert len({p.json["nonce"] for p in posts}) == 3


async def test_button_press_becomes_an_action_and_escalates(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    spy = IngestSpy(discord_hub)
    await fake_discord.dispatch("MESSAGE_CREATE", message("1370", "hello", channel_id=DM))
    await fake_discord.wait_for("POST", rf"/channels/{DM}/messages")
    press = button_interaction("1371", "handoff.request", message_id="1", channel_id=DM)
    await fake_discord.dispatch("INTERACTION_CREATE", press)
    receipt = await spy.wait("1371")
    assert receipt.session_key == DM_KEY
    assert spy.messages[-1].action == "handoff.request"
    [callback] = await fake_discord.wait_for("POST", r"/interactions/1371/[^/]+/callback")
    assert callback.json["type"] == 7  # update message
    assert callback.json["data"]["components"] == []  # the buttons are removed
    posts = await fake_discord.wait_for("POST", rf"/channels/{DM}/messages", count=2)
    conv = await discord_hub.store.conversation(DM_KEY)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    assert posts[1].json["content"]  # the handoff notice reached the customer


async def test_escalation_round_trip_through_a_support_thread(
    fake_discord: FakeDiscord, discord_hub: Hub, scripted_agent: ScriptedAgent
) -> None:
    fake_discord.add_text_channel(CHANNEL, GUILD)
    key = thread_key("1380")
    await fake_discord.dispatch(
        "MESSAGE_CREATE", message("1380", "I want a refund", guild_id=GUILD, mention_bot=True)
    )
    await fake_discord.wait_for("POST", r"/channels/1380/messages")
    await fake_discord.dispatch(
        "MESSAGE_CREATE",
        message("1381", "can I talk to a person please", channel_id="1380", guild_id=GUILD),
    )
    posts = await fake_discord.wait_for("POST", r"/channels/1380/messages", count=2)
    conv = await discord_hub.store.conversation(key)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    turns = len(scripted_agent.turns)

    agent = await add_agent(discord_hub.store, "ana", "correct horse battery", "Ana")
    await discord_hub.handoff.claim(key, agent)
    await discord_hub.handoff.reply(key, agent, "Hi, Ana here. Refund issued.")
    posts = await fake_discord.wait_for("POST", r"/channels/1380/messages", count=4)
    assert any(
        p.json["content"] == "**Ana** (support team): Hi, Ana here. Refund issued." for p in posts
    )
    await fake_discord.dispatch(
        "MESSAGE_CREATE", message("1382", "thanks!", channel_id="1380", guild_id=GUILD)
    )
    await asyncio.sleep(0.3)
    assert len(scripted_agent.turns) == turns, "the bot spoke while a human owned the thread"

    await discord_hub.handoff.resolve(key, agent)
    n = len(fake_discord.calls("POST", r"/channels/1380/messages"))
    await fake_discord.dispatch(
        "MESSAGE_CREATE", message("1383", "one more question", channel_id="1380", guild_id=GUILD)
    )
    posts = await fake_discord.wait_for("POST", r"/channels/1380/messages", count=n + 1)
    assert posts[-1].json["content"] == "Echo: one more question"


async def test_short_429_is_waited_out_by_discord_py(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    fake_discord.rate_limits.append(
        RateLimitPlan("POST", rf"/channels/{DM}/messages", retry_after=0.3)
    )
    out = OutboundMessage(session_key=DM_KEY, text="after the limit", idempotency_key="rl-1")
    await plugin_of(discord_hub).send(out)
    first, second = fake_discord.calls("POST", rf"/channels/{DM}/messages")
    assert second.at - first.at >= 0.29
    assert second.json["content"] == "after the limit"
    assert first.json["nonce"] == second.json["nonce"]


async def test_long_429_becomes_rate_limited_for_the_hub(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    fake_discord.rate_limits.append(
        RateLimitPlan("POST", rf"/channels/{DM}/messages", retry_after=45.0)
    )
    out = OutboundMessage(session_key=DM_KEY, text="later", idempotency_key="rl-2")
    with pytest.raises(RateLimited) as err:
        await plugin_of(discord_hub).send(out)
    assert err.value.retry_after == 45.0
    await plugin_of(discord_hub).send(out)  # the hub's retry
    posts = fake_discord.calls("POST", rf"/channels/{DM}/messages")
    assert len(posts) == 2
    assert posts[-1].json["content"] == "later"


async def test_a_retried_split_message_resumes_after_the_delivered_parts(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    text = "a" * 1900 + "\n\n" + "b" * 1900
    fake_discord.rate_limits.append(
        RateLimitPlan("POST", rf"/channels/{DM}/messages", retry_after=45.0, after=1)
    )
    out = OutboundMessage(session_key=DM_KEY, text=text, idempotency_key="split-1")
    with pytest.raises(RateLimited):
        await plugin_of(discord_hub).send(out)
    await plugin_of(discord_hub).send(out)  # the hub's retry
    sent = [p.json["content"][0] for p in fake_discord.calls("POST", rf"/channels/{DM}/messages")]
    assert sent == ["a", "b", "b"]  # a delivered, b limited, then only b again


async def test_dm_channel_is_opened_for_a_customer_never_seen_in_this_process(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    key = session_key("discord", BOT_ID, dm_peer="424242")
    await plugin_of(discord_hub).send(
        OutboundMessage(session_key=key, text="Your ticket is solved.")
    )
    [opened] = fake_discord.calls("POST", r"/users/@me/channels")
    assert opened.json == {"recipient_id": "424242"}
    dm_id = next(
        c["id"]
        for c in fake_discord.channels.values()
        if c.get("type") == 1 and c["recipients"][0]["id"] == "424242"
    )
    [post] = fake_discord.calls("POST", rf"/channels/{dm_id}/messages")
    assert post.json["content"] == "Your ticket is solved."


async def test_stop_restores_the_discord_base_urls(
    fake_discord: FakeDiscord, discord_hub_factory: DiscordHubFactory
) -> None:
    import discord.http
    from discord.gateway import DiscordWebSocket

    before = (discord.http.Route.BASE, str(DiscordWebSocket.DEFAULT_GATEWAY))
    hub = await discord_hub_factory()
    assert fake_discord.base_url + "/api/v10" == discord.http.Route.BASE
    await hub.stop(timeout_s=1.0)
    assert (discord.http.Route.BASE, str(DiscordWebSocket.DEFAULT_GATEWAY)) == before


async def test_support_command_in_a_direct_message_answers_there(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    await fake_discord.dispatch(
        "INTERACTION_CREATE",
        support_interaction("1390", question="do you ship abroad?", guild_id=None, channel_id=DM),
    )
    [callback] = await fake_discord.wait_for("POST", r"/interactions/1390/[^/]+/callback")
    assert callback.json["type"] == 4  # channel message with source
    assert "Ask your question here" in callback.json["data"]["content"]
    [answer] = await fake_discord.wait_for("POST", rf"/channels/{DM}/messages")
    assert answer.json["content"] == "Echo: do you ship abroad?"
    assert not fake_discord.calls("POST", r"/channels/\d+/threads")


async def test_a_rejected_token_fails_start_with_a_config_error(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    import discord.http

    before = discord.http.Route.BASE
    settings = make_settings(
        tmp_path,
        discord_bot_token="MTEwMA.wrong.token",
        discord_api_url=fake_discord.base_url + "/api/v10",
    )
    channel = DiscordChannel(settings)
    with pytest.raises(ConfigError, match="rejected the bot token"):
        await channel.start(cast("Hub", object()))
    assert before == discord.http.Route.BASE
    [login] = fake_discord.calls("GET", "/users/@me")
    assert login.headers["Authorization"] == "Bot MTEwMA.wrong.token"
    await channel.stop()
