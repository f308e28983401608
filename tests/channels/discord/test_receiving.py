"""The Discord gateway as a pull receiver: shutdown order, store outages, restart, workers.

The gateway never redelivers a message, so the hub must not refuse one it already received:
intake stops (gateway closed, inbox ingested) before the hub drains, while REST keeps sending
the replies of running turns.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from bot.channel import IngestReceipt
from bot.compose import build_hub
from bot.envelope import InboundMessage, OutboundMessage, session_key
from bot.errors import BackendUnavailable
from channels.discord.plugin import DiscordChannel
from channels.memory.pytest_plugin import ScriptedAgent, make_settings
from tests.channels.discord.frames import CUSTOMER, DM_CHANNEL, TOKEN, message
from tests.channels.discord.harness import IngestSpy
from tests.fakes.discord_api import BOT_ID, FakeDiscord
from tests.lanes.harness import eventually

if TYPE_CHECKING:
    from bot.hub import Hub

DM = DM_CHANNEL
DM_KEY = session_key("discord", BOT_ID, dm_peer=CUSTOMER)


def plugin_of(hub: Hub) -> DiscordChannel:
    channel = hub.channels["discord"]
    assert isinstance(channel, DiscordChannel)
    return channel


def gate_ingest(hub: Hub, event_id: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold ``event_id``'s ingest until the returned ``release`` is set; ``reached`` tells
    when it is held."""
    reached, release = asyncio.Event(), asyncio.Event()
    original = hub.ingest

    async def ingest(msg: InboundMessage) -> IngestReceipt:
        if msg.event_id == event_id:
            reached.set()
            await release.wait()
        return await original(msg)

    hub.ingest = ingest  # type: ignore[method-assign]
    return reached, release


async def test_shutdown_ingests_what_the_gateway_delivered_while_turns_still_reply(
    fake_discord: FakeDiscord, discord_hub: Hub, scripted_agent: ScriptedAgent
) -> None:
    spy = IngestSpy(discord_hub)
    reached, release = gate_ingest(discord_hub, "1502")
    scripted_agent.delay_s = 0.6
    await fake_discord.dispatch("MESSAGE_CREATE", message("1501", "first", channel_id=DM))
    await spy.wait("1501")
    await asyncio.wait_for(scripted_agent.started.wait(), 5)  # a turn is running
    await fake_discord.dispatch("MESSAGE_CREATE", message("1502", "second", channel_id=DM))
    await fake_discord.dispatch("MESSAGE_CREATE", message("1503", "third", channel_id=DM))
    await asyncio.wait_for(reached.wait(), 5)
    await eventually(lambda: plugin_of(discord_hub).receiver.inbox.qsize() == 1)  # 1503 waits

    stopping = asyncio.create_task(discord_hub.stop(timeout_s=3.0))
    await eventually(lambda: fake_discord.identified != [] and not fake_discord._sockets)
    assert not discord_hub.draining  # intake stopped first: nothing is refused yet
    release.set()
    await stopping

    assert [m.event_id for m in spy.messages] == ["1501", "1502", "1503"]
    assert not any(r.duplicate for rs in spy.receipts.values() for r in rs)
    [reply] = fake_discord.calls("POST", rf"/channels/{DM}/messages")
    assert reply.json["content"] == "Echo: first"  # sent over REST while draining


async def test_a_store_outage_is_retried_in_gateway_order(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    spy = IngestSpy(discord_hub)
    original = discord_hub.ingest
    attempts: list[str] = []

    async def flaky(msg: InboundMessage) -> IngestReceipt:
        attempts.append(msg.event_id)
        if attempts.count("1601") <= 2 and msg.event_id == "1601":
            raise BackendUnavailable("store down")
        return await original(msg)

    discord_hub.ingest = flaky  # type: ignore[method-assign]
    await fake_discord.dispatch("MESSAGE_CREATE", message("1601", "one", channel_id=DM))
    await fake_discord.dispatch("MESSAGE_CREATE", message("1602", "two", channel_id=DM))
    await spy.wait("1602")
    assert attempts == ["1601", "1601", "1601", "1602"]
    assert [m.event_id for m in spy.messages] == ["1601", "1602"]


async def test_receiving_stops_and_starts_again_while_sending_keeps_working(
    fake_discord: FakeDiscord, discord_hub: Hub
) -> None:
    plugin = plugin_of(discord_hub)
    spy = IngestSpy(discord_hub)
    assert plugin.receiver_account() == BOT_ID
    await plugin.stop_receiving()
    assert not fake_discord._sockets
    await plugin.send(OutboundMessage(session_key=DM_KEY, text="still here"))
    [post] = fake_discord.calls("POST", rf"/channels/{DM}/messages")
    assert post.json["content"] == "still here"

    await plugin.start_receiving()
    await eventually(lambda: len(fake_discord.identified) == 2)
    await fake_discord.dispatch("MESSAGE_CREATE", message("1702", "back again", channel_id=DM))
    assert not (await spy.wait("1702")).duplicate
    await fake_discord.wait_for("POST", rf"/channels/{DM}/messages", count=2)


async def test_a_worker_hub_never_connects_the_gateway_but_sends(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, discord_bot_token=TOKEN, discord_api_url=fake_discord.base_url + "/api/v10"
    )
    hub = await build_hub(
        settings,
        agent=ScriptedAgent(),
        channels=[DiscordChannel(settings)],
        load_knowledge=False,
        receive=False,
    )
    await hub.start()
    try:
        await asyncio.sleep(0.3)
        assert fake_discord.identified == []
        assert fake_discord.calls("GET", "/users/@me")  # logged in over REST
        await hub.channels["discord"].send(OutboundMessage(session_key=DM_KEY, text="hi"))
        [post] = fake_discord.calls("POST", rf"/channels/{DM}/messages")
        assert post.json["content"] == "hi"
    finally:
        await hub.stop(timeout_s=1.0)
