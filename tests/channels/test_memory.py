"""The memory channel and its pytest plugin."""

from __future__ import annotations

import pytest

from bot.agent import AgentReply
from bot.config import Settings
from bot.envelope import TALK_TO_HUMAN, OutboundKind
from bot.hub import Hub
from bot.store.base import Role, SessionMode
from channels.memory.plugin import MemoryChannel
from channels.memory.pytest_plugin import ScriptedAgent


async def test_push_and_pop_a_round_trip(memory_channel: MemoryChannel) -> None:
    receipt = await memory_channel.push_message("hello", event_id="m-1", conversation="c1")
    assert receipt.session_key == "memory:default:c1"
    assert (receipt.event_id, receipt.duplicate, receipt.seq) == ("m-1", False, 1)
    out = await memory_channel.pop_message(receipt.session_key)
    assert out.text == "Echo: hello"
    assert out.reply_to == "m-1"
    assert out.kind == OutboundKind.ANSWER
    assert memory_channel.outbox == [out]
    assert memory_channel.pending() == []


async def test_pop_times_out(memory_channel: MemoryChannel) -> None:
    with pytest.raises(TimeoutError):
        await memory_channel.pop_message(timeout_s=0.05)


async def test_pop_filters_by_session(
    memory_channel: MemoryChannel, scripted_agent: ScriptedAgent
) -> None:
    a = await memory_channel.push_message("to a", conversation="a")
    await memory_channel.pop_message(a.session_key)
    b = await memory_channel.push_message("to b", conversation="b")
    assert (await memory_channel.pop_message(b.session_key)).text == "Echo: to b"
    await memory_channel.push_message("again a", conversation="a")
    out = await memory_channel.pop_message()
    assert (out.session_key, out.text) == (a.session_key, "Echo: again a")
    assert [t.session_key for t in scripted_agent.turns] == [
        a.session_key,
        b.session_key,
        a.session_key,
    ]


async def test_duplicate_push_is_answered_once(
    memory_channel: MemoryChannel, scripted_agent: ScriptedAgent
) -> None:
    first = await memory_channel.push_message("once", event_id="dup")
    second = await memory_channel.push_message("once", event_id="dup")
    assert (first.duplicate, second.duplicate) == (False, True)
    await memory_channel.pop_message()
    with pytest.raises(TimeoutError):
        await memory_channel.pop_message(timeout_s=0.3)
    assert len(scripted_agent.turns) == 1


async def test_scripted_replies_and_the_handoff_button(
    memory_hub: Hub, memory_channel: MemoryChannel, scripted_agent: ScriptedAgent
) -> None:
    scripted_agent.replies.append(AgentReply(text="I can help.", actions=[TALK_TO_HUMAN]))
    r = await memory_channel.push_message("help")
    out = await memory_channel.pop_message(r.session_key)
    assert out.text == "I can help."
    assert [a.id for a in out.actions] == ["handoff.request"]
    await memory_channel.push_message("", action="handoff.request")
    notice = await memory_channel.pop_message(r.session_key)
    assert notice.kind in (OutboundKind.HANDOFF, OutboundKind.NOTICE)
    conv = await memory_hub.store.conversation(r.session_key)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    stored = await memory_hub.store.messages(r.session_key)
    assert stored[0].role == Role.CUSTOMER
    assert len(scripted_agent.turns) == 1  # the button press went to the queue, not the bot


async def test_push_before_start_is_refused(hub_settings: Settings) -> None:
    channel = MemoryChannel(hub_settings)
    with pytest.raises(RuntimeError, match="before the hub started"):
        await channel.push_message("hi")


def test_parse_payload(hub_settings: Settings) -> None:
    parsed = MemoryChannel.parse_payload(
        b'{"text": "hi", "user_id": "u2", "conversation": "k", "event_id": "e"}',
        filename="x.json",
        settings=hub_settings,
    )
    env = parsed.envelope  # type: ignore[union-attr]
    assert (env.session_key, env.sender.id, env.event_id) == ("memory:default:k", "u2", "e")
