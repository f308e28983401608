"""The channel contract: what every channel plugin must do, whatever its platform.

A channel's test module subclasses :class:`ChannelContract` and provides a ``harness`` fixture
(a started real hub with the channel, driven from the customer's side through the channel's
real entry point: its webhook, WebSocket or API). Slack, Teams, Telegram, Discord and e-mail
reuse this suite with their own harness (a fake platform server records deliveries).

Harness protocol: ``name``, ``plugin_cls``, ``hub``, ``session_key``,
``await customer_says(text, event_id=...) -> Receipt``, ``await next_delivery(timeout_s) ->
Delivery`` (the next non-customer message that reached the customer),
``await offered_actions(reply_to) -> list[str] | None`` (button ids shown with a reply, None when
the platform has no buttons), plus a module-level ``samples(name)`` of recorded payloads.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import pytest

from bot.channel import Ignored, Parsed
from bot.config import Settings
from bot.envelope import (
    TALK_TO_HUMAN,
    Citation,
    OutboundKind,
    OutboundMessage,
    SessionKey,
    channel_of,
)
from bot.errors import PayloadInvalid
from bot.registry import load_channels
from bot.store.base import Role
from tests.channels.support import Delivery, Receipt, samples

GARBAGE: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"42",
    b'"text"',
    b"{}",
    b'{"text": 5}',
    b'{"text": null, "user": []}',
    b"\xff\xfe\x00garbage",
    b'{"type": "unknown"}',
    json.dumps({"text": "x" * 70_000, "user": {"id": "u"}}).encode(),
]


class ChannelHarness(Protocol):
    name: str
    plugin_cls: Any
    hub: Any
    session_key: SessionKey

    async def customer_says(self, text: str, *, event_id: str) -> Receipt: ...

    async def next_delivery(self, timeout_s: float = 5.0) -> Delivery: ...

    async def offered_actions(
        self, reply_to: str | None, timeout_s: float = 2.0
    ) -> list[str] | None: ...


def stored_event_id(harness: ChannelHarness, event_id: str) -> str:
    """The event id the hub stores for a contract event id.

    Most harnesses send the contract's ids unchanged; a platform whose ids have another form
    (Telegram's integer ``update_id``) gives its harness ``platform_event_id(event_id)``.
    """
    mapper = getattr(harness, "platform_event_id", None)
    return str(mapper(event_id)) if mapper is not None else event_id


class ChannelContract:
    """Subclass in ``test_contract_<channel>.py`` with a ``harness`` fixture."""

    # --- without the hub ----------------------------------------------------------------------
    def test_plugin_is_registered_under_its_name(self, harness: ChannelHarness) -> None:
        cls = harness.plugin_cls
        assert isinstance(cls.name, str)
        assert cls.name == harness.name
        assert cls in load_channels()

    def test_enabled_answers_a_bool(self, harness: ChannelHarness) -> None:
        assert isinstance(harness.plugin_cls.enabled(harness.hub.settings), bool)

    def test_parse_recorded_payloads(self, harness: ChannelHarness) -> None:
        recorded = samples(harness.name)
        assert recorded, f"no recorded payloads for {harness.name}"
        parsed = 0
        for filename, data in recorded:
            result = harness.plugin_cls.parse_payload(
                data, filename=filename, settings=harness.hub.settings
            )
            assert isinstance(result, Parsed | Ignored), filename
            if isinstance(result, Parsed):
                parsed += 1
                env = result.envelope
                assert env.channel == harness.name
                assert channel_of(env.session_key) == harness.name
                assert env.event_id
                assert env.text or env.action, filename
                again = harness.plugin_cls.parse_payload(
                    data, filename=filename, settings=harness.hub.settings
                )
                assert isinstance(again, Parsed)
                assert again.envelope.event_id == env.event_id, "parsing is not deterministic"
        assert parsed, "no recorded payload became an envelope"

    @pytest.mark.parametrize("data", GARBAGE, ids=range(len(GARBAGE)))
    def test_parse_garbage_raises_only_payload_invalid(
        self, harness: ChannelHarness, data: bytes
    ) -> None:
        settings: Settings = harness.hub.settings
        result: object
        try:
            result = harness.plugin_cls.parse_payload(data, filename="x.json", settings=settings)
        except PayloadInvalid as exc:  # the only error a parser may raise
            result = exc
        assert isinstance(result, Parsed | Ignored | PayloadInvalid)
        if isinstance(result, PayloadInvalid):
            assert str(result), "PayloadInvalid without a message"

    # --- through the hub ----------------------------------------------------------------------
    async def test_customer_message_is_answered(self, harness: ChannelHarness) -> None:
        receipt = await harness.customer_says("How do I reset my password?", event_id="c-ask-1")
        assert receipt.duplicate is False
        assert receipt.event_id == "c-ask-1"
        assert receipt.session_key == harness.session_key
        answer = await harness.next_delivery()
        assert answer.text == "Echo: How do I reset my password?"
        assert answer.reply_to == "c-ask-1"
        assert [c.doc_id for c in answer.citations] == ["guide"]

    async def test_duplicate_event_is_ingested_and_answered_once(
        self, harness: ChannelHarness
    ) -> None:
        first = await harness.customer_says("Where is my order?", event_id="c-dup-1")
        second = await harness.customer_says("Where is my order?", event_id="c-dup-1")
        assert (first.duplicate, second.duplicate) == (False, True)
        await harness.next_delivery()
        with pytest.raises(TimeoutError):
            await harness.next_delivery(timeout_s=0.4)
        stored = await harness.hub.store.messages(harness.session_key)
        customer = [m for m in stored if m.role == Role.CUSTOMER]
        assert [m.event_id for m in customer] == [stored_event_id(harness, "c-dup-1")]
        assert len(harness.hub.agent.turns) == 1

    async def test_send_with_citations_and_actions_reaches_the_customer(
        self, harness: ChannelHarness
    ) -> None:
        await harness.customer_says("hello", event_id="c-send-0")
        await harness.next_delivery()
        out = OutboundMessage(
            session_key=harness.session_key,
            text="**Slack** setup is described in the guide.\n\n- step one\n- step two",
            citations=(
                Citation(doc_id="slack", title="Connect Slack", url="https://d.example/slack"),
                Citation(doc_id="faq", title="FAQ", url=None, score=0.2),
            ),
            actions=(TALK_TO_HUMAN,),
            reply_to="c-send-0",
            kind=OutboundKind.ANSWER,
            idempotency_key="contract-send-1",
        )
        await harness.hub.deliver(out)
        await harness.hub.deliver(out)  # the same idempotency key: delivered once
        got = await harness.next_delivery()
        assert "Slack" in got.text
        assert "step two" in got.text
        assert [(c.doc_id, c.url) for c in got.citations] == [
            ("slack", "https://d.example/slack"),
            ("faq", None),
        ]
        actions = await harness.offered_actions("c-send-0")
        if actions is not None:
            assert TALK_TO_HUMAN.id in actions
        with pytest.raises(TimeoutError):
            await harness.next_delivery(timeout_s=0.3)
