"""The hub end to end on the real store, lanes, router and handoff, with a scripted agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.agent import AgentReply, TurnInput
from bot.compose import build_hub
from bot.config import QueueMode, Settings
from bot.envelope import OutboundKind, OutboundMessage
from bot.errors import LLMUnavailable, RateLimited
from bot.hub import Hub
from bot.store.base import Role, SessionMode
from channels.memory.plugin import MemoryChannel


class Agent:
    """Answers "re: TEXT"; can be told to fail, block or escalate."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: BaseException | None = None
        self.block: asyncio.Event | None = None

    async def respond(self, turn: TurnInput) -> AgentReply:
        self.calls.append([m.text for m in turn.messages])
        if self.block is not None:
            await self.block.wait()
        if self.fail is not None:
            raise self.fail
        return AgentReply(text="re: " + " | ".join(m.text for m in turn.messages))


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, debounce_ms=20, lane_idle_s=5.0, **kw)  # type: ignore[arg-type]


HubFactory = Callable[..., "asyncio.Future[tuple[Hub, MemoryChannel]]"]


@pytest.fixture
async def make_hub(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    hubs: list[Hub] = []

    async def factory(agent: Agent, **kw: object) -> tuple[Hub, MemoryChannel]:
        settings = _settings(tmp_path, **kw)
        channel = MemoryChannel(settings)
        hub = await build_hub(settings, agent=agent, channels=[channel], load_knowledge=False)
        await hub.start()
        hubs.append(hub)
        return hub, channel

    yield factory
    for hub in hubs:
        await hub.stop(timeout_s=1.0)


async def test_answer_reaches_customer_and_is_stored(make_hub: Callable[..., object]) -> None:
    agent = Agent()
    hub, ch = await make_hub(agent)  # type: ignore[misc]
    receipt = await ch.push_message("hello there", event_id="e1")
    out = await ch.pop_message(receipt.session_key)
    assert out.text == "re: hello there"
    assert out.reply_to == "e1"
    stored = await hub.store.messages(receipt.session_key)
    assert [(m.role, m.text) for m in stored] == [
        (Role.CUSTOMER, "hello there"),
        (Role.BOT, "re: hello there"),
    ]


async def test_duplicate_event_is_answered_once(make_hub: Callable[..., object]) -> None:
    agent = Agent()
    _, ch = await make_hub(agent)  # type: ignore[misc]
    first = await ch.push_message("same", event_id="dup")
    second = await ch.push_message("same", event_id="dup")
    assert not first.duplicate
    assert second.duplicate
    await ch.pop_message(first.session_key)
    with pytest.raises(TimeoutError):
        await ch.pop_message(first.session_key, timeout_s=0.3)
    assert agent.calls == [["same"]]


async def test_followup_answers_each_message_in_order(make_hub: Callable[..., object]) -> None:
    agent = Agent()
    agent.block = asyncio.Event()
    _, ch = await make_hub(agent, queue_mode=QueueMode.FOLLOWUP)  # type: ignore[misc]
    for i in range(5):
        await ch.push_message(f"m{i}", event_id=f"e{i}")
    agent.block.set()
    key = ch.session_key_for("c1")
    replies = [await ch.pop_message(key) for _ in range(5)]
    assert [r.reply_to for r in replies] == [f"e{i}" for i in range(5)]
    assert [r.text for r in replies] == [f"re: m{i}" for i in range(5)]


async def test_collect_folds_messages_sent_during_a_turn(make_hub: Callable[..., object]) -> None:
    agent = Agent()
    agent.block = asyncio.Event()
    _, ch = await make_hub(agent)  # type: ignore[misc]
    await ch.push_message("first", event_id="a")
    await asyncio.sleep(0.05)
    await ch.push_message("second", event_id="b")
    await ch.push_message("third", event_id="c")
    agent.block.set()
    key = ch.session_key_for("c1")
    assert (await ch.pop_message(key)).text == "re: first"
    folded = await ch.pop_message(key)
    assert folded.text == "re: second | third"
    assert folded.reply_to == "c"


async def test_failed_turn_escalates_with_notice_and_ticket(
    make_hub: Callable[..., object],
) -> None:
    agent = Agent()
    agent.fail = LLMUnavailable("every model failed")
    hub, ch = await make_hub(agent)  # type: ignore[misc]
    receipt = await ch.push_message("my order is late", event_id="x1")
    notice = await ch.pop_message(receipt.session_key)
    assert notice.kind == OutboundKind.HANDOFF
    conv = await hub.store.conversation(receipt.session_key)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    assert conv.escalation_reason == "turn_failed"
    assert conv.ticket_id is not None
    ticket = await hub.tickets.get(conv.ticket_id)
    assert ticket is not None
    assert "my order is late" in ticket.description


async def test_asking_for_a_person_escalates_without_the_agent(
    make_hub: Callable[..., object],
) -> None:
    agent = Agent()
    hub, ch = await make_hub(agent)  # type: ignore[misc]
    receipt = await ch.push_message("I want to talk to a human please", event_id="h1")
    notice = await ch.pop_message(receipt.session_key)
    assert notice.kind == OutboundKind.HANDOFF
    assert agent.calls == []
    # While queued for a human the bot stays silent.
    await ch.push_message("hello?", event_id="h2")
    with pytest.raises(TimeoutError):
        await ch.pop_message(receipt.session_key, timeout_s=0.3)
    assert agent.calls == []
    stored = await hub.store.messages(receipt.session_key)
    assert [m.text for m in stored if m.role == Role.CUSTOMER] == [
        "I want to talk to a human please",
        "hello?",
    ]


async def test_button_press_escalates(make_hub: Callable[..., object]) -> None:
    agent = Agent()
    hub, ch = await make_hub(agent)  # type: ignore[misc]
    receipt = await ch.push_message("", event_id="b1", action="handoff.request")
    notice = await ch.pop_message(receipt.session_key)
    assert notice.kind == OutboundKind.HANDOFF
    conv = await hub.store.conversation(receipt.session_key)
    assert conv is not None
    assert conv.escalation_reason == "customer_request"


async def test_stop_keeps_unanswered_messages_for_the_next_start(tmp_path: Path) -> None:
    blocked = Agent()
    blocked.block = asyncio.Event()  # never set: the turn is still running at shutdown
    settings = _settings(tmp_path)
    ch1 = MemoryChannel(settings)
    hub1 = await build_hub(settings, agent=blocked, channels=[ch1], load_knowledge=False)
    await hub1.start()
    await ch1.push_message("are you there?", event_id="r1")
    await ch1.push_message("hello??", event_id="r2", conversation="c2")
    await asyncio.sleep(0.05)
    await hub1.stop(timeout_s=0.2)
    assert blocked.calls  # the turn had started, then was cut by the drain bound

    agent = Agent()
    ch2 = MemoryChannel(settings)
    hub2 = await build_hub(settings, agent=agent, channels=[ch2], load_knowledge=False)
    await hub2.start()
    try:
        got = {(await ch2.pop_message(ch2.session_key_for(c))).reply_to for c in ("c1", "c2")}
        assert got == {"r1", "r2"}
    finally:
        await hub2.stop(timeout_s=1.0)


async def test_draining_hub_refuses_new_messages(make_hub: Callable[..., object]) -> None:
    from bot.errors import Draining

    hub, ch = await make_hub(Agent())  # type: ignore[misc]
    await hub.stop(timeout_s=0.5)
    with pytest.raises(Draining):
        await ch.push_message("late", event_id="late")


class FlakyChannel(MemoryChannel):
    """Rate-limits the first send, then delivers."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.attempts = 0

    async def send(self, out: OutboundMessage) -> None:
        self.attempts += 1
        if self.attempts == 1:
            raise RateLimited("slow down", retry_after=0.05)
        await super().send(out)


async def test_rate_limited_send_is_retried_not_dropped(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ch = FlakyChannel(settings)
    hub = await build_hub(settings, agent=Agent(), channels=[ch], load_knowledge=False)
    await hub.start()
    try:
        receipt = await ch.push_message("hi", event_id="f1")
        out = await ch.pop_message(receipt.session_key)
        assert out.text == "re: hi"
        assert ch.attempts == 2
    finally:
        await hub.stop(timeout_s=1.0)


async def test_delivery_is_idempotent(make_hub: Callable[..., object]) -> None:
    hub, ch = await make_hub(Agent())  # type: ignore[misc]
    key = ch.session_key_for("c9")
    await ch.push_message("start", event_id="s1", conversation="c9")
    await ch.pop_message(key)
    out = OutboundMessage(session_key=key, text="once", idempotency_key="k-1")
    first = await hub.deliver(out)
    second = await hub.deliver(out)
    assert first.seq == second.seq
    assert (await ch.pop_message(key)).text == "once"
    with pytest.raises(TimeoutError):
        await ch.pop_message(key, timeout_s=0.2)


class DownOnceChannel(MemoryChannel):
    """The platform is unreachable for the first send, then delivers."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.attempts = 0

    async def send(self, out: OutboundMessage) -> None:
        from bot.errors import ChannelUnavailable

        self.attempts += 1
        if self.attempts == 1:
            raise ChannelUnavailable("connection refused")
        await super().send(out)


async def test_unreachable_platform_is_retried_with_backoff(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ch = DownOnceChannel(settings)
    hub = await build_hub(settings, agent=Agent(), channels=[ch], load_knowledge=False)
    await hub.start()
    try:
        receipt = await ch.push_message("hi", event_id="d1")
        out = await ch.pop_message(receipt.session_key, timeout_s=10.0)
        assert out.text == "re: hi"
        assert ch.attempts == 2
    finally:
        await hub.stop(timeout_s=1.0)
