"""The router streams answers only to channels that can edit a message, and the final answer
always goes out last, once, through the hub's send path."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.agent import AgentReply, TurnInput
from bot.channel import StreamingChannel
from bot.config import Settings
from bot.envelope import OutboundKind, OutboundMessage
from bot.errors import LLMUnavailable
from channels.memory.plugin import MemoryChannel
from channels.memory.pytest_plugin import HubFactory, ScriptedAgent

ANSWER = "Open Settings, then Billing, then Invoices, and download the PDF you need."


class StreamingMemoryChannel(MemoryChannel):
    """The memory channel with the streaming capability; records every call in ``log``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.log: list[tuple[str, Any]] = []
        self.stream_latency_s = 0.0

    async def stream(self, out: OutboundMessage) -> None:
        self.log.append(("stream_start", out.text))
        await asyncio.sleep(self.stream_latency_s)
        self.log.append(("stream", out.text))

    async def discard_stream(self, out: OutboundMessage) -> None:
        self.log.append(("discard", out.idempotency_key))

    async def send(self, out: OutboundMessage) -> None:
        self.log.append(("send", out.kind))
        await super().send(out)


def streaming_reply(pieces: int = 30, pause_s: float = 0.005) -> Any:
    async def reply(turn: TurnInput) -> AgentReply:
        assert turn.stream is not None
        for i in range(1, pieces + 1):
            await turn.stream(ANSWER[: len(ANSWER) * i // pieces])
            await asyncio.sleep(pause_s)
        return AgentReply(text=ANSWER)

    return reply


async def streaming_hub(hub_factory: HubFactory, **overrides: Any) -> StreamingMemoryChannel:
    hub = await hub_factory(channels=(StreamingMemoryChannel,), **overrides)
    channel = hub.channels["memory"]
    assert isinstance(channel, StreamingMemoryChannel)
    assert isinstance(channel, StreamingChannel)
    return channel


def ops(channel: StreamingMemoryChannel) -> list[str]:
    return [op for op, _ in channel.log]


async def test_a_streamed_answer_is_throttled_and_sent_once_after_the_last_edit(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    channel = await streaming_hub(hub_factory, stream_interval_s=0.03)
    scripted_agent.reply_fn = streaming_reply()
    await channel.push_message("Where are my invoices?", event_id="e1")

    out = await channel.pop_message(MemoryChannel.session_key_for("c1"))

    assert out.text == ANSWER
    assert out.idempotency_key == "answer:e1"
    edits = [text for op, text in channel.log if op == "stream"]
    assert 1 <= len(edits) < 30 / 2
    assert ops(channel).count("send") == 1
    assert ops(channel)[-1] == "send"  # no partial edit after the final answer
    assert channel.pending() == []


async def test_the_final_answer_waits_for_an_edit_in_flight(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    channel = await streaming_hub(hub_factory, stream_interval_s=0.0)
    channel.stream_latency_s = 0.2

    async def reply(turn: TurnInput) -> AgentReply:
        assert turn.stream is not None
        await turn.stream("Open Settings, then")
        await asyncio.sleep(0.01)  # the edit is in flight when the answer is ready
        return AgentReply(text=ANSWER)

    scripted_agent.reply_fn = reply
    await channel.push_message("Where are my invoices?", event_id="e1")
    await channel.pop_message(MemoryChannel.session_key_for("c1"))

    assert ops(channel) == ["stream_start", "stream", "send"]


async def test_streaming_off_passes_no_stream(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    channel = await streaming_hub(hub_factory, llm_stream=False)
    await channel.push_message("hi", event_id="e1")
    await channel.pop_message(MemoryChannel.session_key_for("c1"))

    assert scripted_agent.turns[0].stream is None
    assert ops(channel) == ["send"]


async def test_a_channel_without_the_capability_gets_one_send_as_before(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    hub = await hub_factory(channels=(MemoryChannel,))
    channel = hub.channels["memory"]
    assert isinstance(channel, MemoryChannel)
    assert not isinstance(channel, StreamingChannel)
    await channel.push_message("hi", event_id="e1")
    out = await channel.pop_message(MemoryChannel.session_key_for("c1"))

    assert scripted_agent.turns[0].stream is None
    assert out.text == "Echo: hi"
    assert channel.pending() == []


async def test_a_failed_turn_removes_the_partial_answer_and_the_notice_is_not_streamed(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    channel = await streaming_hub(hub_factory, stream_interval_s=0.0)

    async def reply(turn: TurnInput) -> AgentReply:
        assert turn.stream is not None
        await turn.stream("Open Settings, then")
        await asyncio.sleep(0.02)
        raise LLMUnavailable("every model failed")

    scripted_agent.reply_fn = reply
    await channel.push_message("Where are my invoices?", event_id="e1")
    notice = await channel.pop_message(MemoryChannel.session_key_for("c1"))

    assert notice.kind == OutboundKind.HANDOFF
    assert ops(channel) == ["stream_start", "stream", "discard", "send"]
    assert ("discard", "answer:e1") in channel.log


async def test_an_escalation_without_answer_text_removes_the_partial_answer(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    channel = await streaming_hub(hub_factory, stream_interval_s=0.0)

    async def reply(turn: TurnInput) -> AgentReply:
        assert turn.stream is not None
        await turn.stream("Let me check that for you")
        await asyncio.sleep(0.02)
        return AgentReply(text="", escalate="agent_tool")

    scripted_agent.reply_fn = reply
    await channel.push_message("refund please", event_id="e1")
    notice = await channel.pop_message(MemoryChannel.session_key_for("c1"))

    assert notice.kind == OutboundKind.HANDOFF
    assert ops(channel) == ["stream_start", "stream", "discard", "send"]


async def test_an_interrupted_turn_removes_its_partial_answer(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    channel = await streaming_hub(hub_factory, stream_interval_s=0.0, queue_mode="interrupt")
    streamed = asyncio.Event()

    async def reply(turn: TurnInput) -> AgentReply:
        assert turn.stream is not None
        if turn.messages[-1].event_id == "e1":
            await turn.stream("A first answer that will never finish")
            await asyncio.sleep(0.02)
            streamed.set()
            await asyncio.sleep(30)
        return AgentReply(text=ANSWER)

    scripted_agent.reply_fn = reply
    await channel.push_message("first question", event_id="e1")
    await asyncio.wait_for(streamed.wait(), 5)
    await channel.push_message("actually, another question", event_id="e2")
    out = await channel.pop_message(MemoryChannel.session_key_for("c1"))

    assert out.idempotency_key == "answer:e2"
    for _ in range(100):
        if ("discard", "answer:e1") in channel.log:
            break
        await asyncio.sleep(0.01)
    assert ("discard", "answer:e1") in channel.log
