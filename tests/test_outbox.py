"""The hub's outbox: answers a platform did not take are sent later, in order, or escalated."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.agent import AgentReply, TurnInput
from bot.compose import build_hub
from bot.config import QueueMode, Settings
from bot.envelope import OutboundKind, OutboundMessage, SessionKey, utcnow
from bot.errors import ChannelUnavailable, Forbidden
from bot.hub import DeliveryPolicy, Hub
from bot.store.base import SessionMode
from bot.store.sql import make_engine
from bot.store.sql import metadata as store_metadata
from channels.memory.plugin import MemoryChannel
from plugins.ticketing.local import metadata as ticket_metadata
from tests.fakes import postgres

postgres_server = postgres.postgres_server
postgres_url = postgres.postgres_url

FAST = DeliveryPolicy(
    send_attempts=1,  # one inline retry, no wait
    send_budget_s=1.0,
    outbox_retry_s=0.05,
    outbox_retry_max_s=0.2,
    outbox_poll_s=0.02,
    outbox_lease_s=5.0,
)


class Agent:
    """Answers "re: TEXT" at once."""

    async def respond(self, turn: TurnInput) -> AgentReply:
        return AgentReply(text="re: " + " | ".join(m.text for m in turn.messages))


class Platform(MemoryChannel):
    """A memory channel whose platform can be down, or refuse everything.

    Attributes:
        down: sends raise ``ChannelUnavailable`` while True.
        failing: sends of these texts raise ``ChannelUnavailable``.
        refuse: sends raise ``Forbidden`` (a permanent refusal) while True.
        tried: the text of every send attempt, in order.
        sent: ``(monotonic time, idempotency key)`` of every delivered message.
    """

    def __init__(self, settings: Settings, *, down: bool = False, delay_s: float = 0.0) -> None:
        super().__init__(settings)
        self.down = down
        self.refuse = False
        self.failing: set[str] = set()
        self.delay_s = delay_s
        self.tried: list[str] = []
        self.sent: list[tuple[float, str | None]] = []

    async def send(self, out: OutboundMessage) -> None:
        self.tried.append(out.text)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.refuse:
            raise Forbidden("the platform refuses this chat")
        if self.down or out.text in self.failing:
            raise ChannelUnavailable("connection refused")
        self.sent.append((time.monotonic(), out.idempotency_key))
        await super().send(out)


Make = Callable[..., Awaitable[tuple[Hub, Platform]]]


@pytest.fixture
async def make_hub(tmp_path: Path) -> AsyncIterator[Make]:
    hubs: list[Hub] = []

    async def factory(
        channel: Platform | None = None, *, policy: DeliveryPolicy = FAST, **kw: object
    ) -> tuple[Hub, Platform]:
        settings = Settings(
            data_dir=tmp_path,
            debounce_ms=10,
            queue_mode=QueueMode.FOLLOWUP,
            **kw,  # type: ignore[arg-type]
        )
        ch = channel or Platform(settings)
        hub = await build_hub(
            settings, agent=Agent(), channels=[ch], load_knowledge=False, delivery=policy
        )
        await hub.start()
        hubs.append(hub)
        return hub, ch

    yield factory
    for hub in hubs:
        await hub.stop(timeout_s=1.0)


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.01)


def _count(hub: Hub, name: str, **labels: str) -> float:
    value = hub.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_undelivered_answer_waits_in_the_outbox_until_the_platform_is_back(
    make_hub: Make, tmp_path: Path
) -> None:
    hub, ch = await make_hub(policy=dataclasses.replace(FAST, outbox_retry_s=0.3))
    ch.down = True
    receipt = await ch.push_message("where is my order?", event_id="e1")
    key = receipt.session_key
    await _until(lambda: hub.store.outbox_pending(key))
    (entry,) = await hub.store.outbox(key)
    assert entry.message.text == "re: where is my order?"
    assert entry.message.idempotency_key == "answer:e1"
    assert entry.last_error is not None
    assert "ChannelUnavailable" in entry.last_error
    assert ch.tried == ["re: where is my order?"] * 2  # first send and one inline retry
    # The row is visible once committed; the counter moves when the deferring task resumes.
    await _until(
        lambda: _true(_count(hub, "switchboard_outbox_deferred_total", channel="memory") == 1)
    )
    assert _count(hub, "switchboard_send_failures_total", channel="memory") == 0
    # The answer is in the history all along.
    assert [m.text for m in await hub.store.messages(key)][-1] == "re: where is my order?"
    await _until(lambda: _true(_count(hub, "switchboard_outbox_depth") == 1))

    ch.down = False
    out = await ch.pop_message(key, timeout_s=2.0)
    assert out.text == "re: where is my order?"
    await _until(lambda: _empty(hub))
    assert _count(hub, "switchboard_messages_out_total", channel="memory", kind="answer") == 1
    await _until(lambda: _true(_count(hub, "switchboard_outbox_depth") == 0))
    status = await hub.store.outbox_status()
    assert status.depth == 0


async def test_a_later_answer_waits_behind_an_earlier_one(make_hub: Make) -> None:
    hub, ch = await make_hub()
    ch.failing = {"re: first"}  # only answer 1 fails: answer 2 could go, but must not
    key = ch.session_key_for("c1")
    await ch.push_message("first", event_id="q1")
    await _until(lambda: hub.store.outbox_pending(key))
    await ch.push_message("second", event_id="q2")
    await _until(lambda: _has_entries(hub, key, 2))
    await asyncio.sleep(0.1)  # several outbox passes retry answer 1 meanwhile
    assert ch.sent == []
    assert "re: second" not in ch.tried
    assert ch.tried.count("re: first") >= 3
    ch.failing = set()
    first = await ch.pop_message(key, timeout_s=2.0)
    second = await ch.pop_message(key, timeout_s=2.0)
    assert [first.text, second.text] == ["re: first", "re: second"]
    assert [k for _, k in ch.sent] == ["answer:q1", "answer:q2"]
    await _until(lambda: _empty(hub))


async def _has_entries(hub: Hub, key: SessionKey, n: int) -> bool:
    return len(await hub.store.outbox(key)) == n


async def _empty(hub: Hub) -> bool:
    return (await hub.store.outbox_status()).depth == 0


async def test_a_permanent_refusal_is_not_retried(make_hub: Make) -> None:
    hub, ch = await make_hub()
    ch.refuse = True
    receipt = await ch.push_message("hi", event_id="r1")
    await _until(
        lambda: _true(_count(hub, "switchboard_send_failures_total", channel="memory") == 1)
    )
    await asyncio.sleep(0.1)  # several outbox passes
    assert ch.tried == ["re: hi"]
    assert not await hub.store.outbox_pending(receipt.session_key)
    assert _count(hub, "switchboard_outbox_deferred_total", channel="memory") == 0


async def _true(value: bool) -> bool:
    return value


async def test_typing_indicators_never_enter_the_outbox(make_hub: Make) -> None:
    hub, ch = await make_hub()
    ch.down = True
    key = ch.session_key_for("t1")
    await hub.deliver(OutboundMessage(session_key=key, text="", kind=OutboundKind.TYPING))
    assert ch.tried == ["", ""]
    assert not await hub.store.outbox_pending(key)
    assert _count(hub, "switchboard_send_failures_total", channel="memory") == 1


async def test_expired_entry_is_abandoned_counted_and_escalated(make_hub: Make) -> None:
    hub, ch = await make_hub(outbox_max_age_s=0.3)
    ch.down = True
    receipt = await ch.push_message("refund please", event_id="x1")
    key = receipt.session_key

    async def escalated() -> bool:
        conv = await hub.store.conversation(key)
        return conv is not None and conv.mode is SessionMode.QUEUED

    await _until(escalated)
    conv = await hub.store.conversation(key)
    assert conv is not None
    assert conv.escalation_reason == "undeliverable"
    assert conv.ticket_id is not None
    assert _count(hub, "switchboard_send_abandoned_total", channel="memory") >= 1
    assert _count(hub, "switchboard_escalations_total", reason="undeliverable") == 1
    assert ch.tried.count("re: refund please") >= 3  # retried before it was given up
    # The escalation notice cannot be delivered either: it expires too, without a second
    # escalation (the session is with the humans now).
    await _until(
        lambda: _true(_count(hub, "switchboard_send_abandoned_total", channel="memory") == 2)
    )
    assert await _empty(hub)
    await asyncio.sleep(0.1)
    assert _count(hub, "switchboard_escalations_total", reason="undeliverable") == 1


async def test_a_new_hub_delivers_what_a_stopped_one_left(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, debounce_ms=10)
    down = Platform(settings, down=True)
    hub1 = await build_hub(
        settings, agent=Agent(), channels=[down], load_knowledge=False, delivery=FAST
    )
    await hub1.start()
    receipt = await down.push_message("anyone?", event_id="s1")
    key = receipt.session_key
    await _until(lambda: hub1.store.outbox_pending(key))
    await hub1.stop(timeout_s=1.0)

    up = Platform(settings)
    hub2 = await build_hub(
        settings, agent=Agent(), channels=[up], load_knowledge=False, delivery=FAST
    )
    await hub2.start()
    try:
        out = await up.pop_message(key, timeout_s=3.0)
        assert (out.text, out.idempotency_key) == ("re: anyone?", "answer:s1")
        await _until(lambda: _empty(hub2))
        with pytest.raises(TimeoutError):  # answered once, not again by recovery
            await up.pop_message(key, timeout_s=0.2)
    finally:
        await hub2.stop(timeout_s=1.0)


async def test_stopping_mid_send_gives_the_entry_back(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, debounce_ms=10)
    slow = Platform(settings, down=True)
    hub1 = await build_hub(
        settings, agent=Agent(), channels=[slow], load_knowledge=False, delivery=FAST
    )
    await hub1.start()
    key = (await slow.push_message("hello", event_id="m1")).session_key
    await _until(lambda: hub1.store.outbox_pending(key))
    slow.delay_s = 30.0  # the next outbox send hangs
    await _until(lambda: _true(len(slow.tried) >= 3))
    await hub1.stop(timeout_s=1.0)

    up = Platform(settings)
    lease = dataclasses.replace(FAST, outbox_lease_s=60.0)
    hub2 = await build_hub(
        settings, agent=Agent(), channels=[up], load_knowledge=False, delivery=lease
    )
    await hub2.start()
    try:  # not after the 5 s lease: at once
        assert (await up.pop_message(key, timeout_s=1.0)).text == "re: hello"
    finally:
        await hub2.stop(timeout_s=1.0)


async def test_two_hubs_on_postgresql_never_send_one_entry_twice(
    postgres_url: str, tmp_path: Path
) -> None:
    engine = make_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(ticket_metadata.drop_all)
            await conn.run_sync(store_metadata.drop_all)
    finally:
        await engine.dispose()
    hubs: list[tuple[Hub, Platform]] = []
    for n in range(2):
        settings = Settings(data_dir=tmp_path / f"h{n}", database_url=postgres_url)
        ch = Platform(settings, delay_s=0.005)
        hub = await build_hub(
            settings,
            agent=Agent(),
            channels=[ch],
            load_knowledge=False,
            delivery=dataclasses.replace(FAST, outbox_batch=4),
        )
        await hub.start()
        hubs.append((hub, ch))
    try:
        keys = [Platform.session_key_for(f"c{i}") for i in range(15)]
        store = hubs[0][0].store
        now = utcnow()
        for n in range(4):
            for key in keys:
                out = OutboundMessage(session_key=key, text=f"{n}", idempotency_key=f"{key}#{n}")
                await store.outbox_put(out, error="e", next_attempt_at=now)
        await _until(lambda: _empty(hubs[0][0]), timeout_s=10.0)
        sent = sorted(s for _, ch in hubs for s in ch.sent)
        assert len(sent) == 60
        assert len({k for _, k in sent}) == 60  # no entry sent twice
        assert all(ch.sent for _, ch in hubs)  # both hubs took part
        for key in keys:
            assert [k for _, k in sent if k and k.startswith(f"{key}#")] == [
                f"{key}#{n}" for n in range(4)
            ]
    finally:
        for hub, _ in hubs:
            await hub.stop(timeout_s=1.0)
