"""The channel contract over the inbound SMTP listener, replies caught by an SMTP sink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from bot.channel import Ignored, Parsed
from bot.config import Settings
from bot.envelope import SessionKey, channel_of
from bot.errors import PayloadInvalid
from channels.email.plugin import EmailChannel
from channels.email.translate import email_session_key
from channels.memory.pytest_plugin import HubFactory
from tests.channels.contract import ChannelContract, ChannelHarness
from tests.channels.email.conftest import (
    CUSTOMER,
    EMAILS,
    SUPPORT,
    customer_mail,
    delivery_of,
    smtp_in,
)
from tests.channels.support import Delivery, Receipt
from tests.fakes.smtp_sink import SmtpSink

ROOT = "contract-thread@customer.example"


class EmailHarness:
    name = "email"
    plugin_cls = EmailChannel

    def __init__(self, hub: Any, sink: SmtpSink) -> None:
        self.hub = hub
        self.sink = sink
        channel = hub.channels["email"]
        assert isinstance(channel, EmailChannel)
        self.channel = channel
        self.session_key: SessionKey = email_session_key(SUPPORT, CUSTOMER, ROOT)

    async def customer_says(self, text: str, *, event_id: str) -> Receipt:
        assert self.channel.smtp_listen_port
        answer = await smtp_in(
            self.channel.smtp_listen_port,
            customer_mail(text, message_id=event_id, references=[ROOT]),
        )
        code, _, detail = answer.partition(" ")
        assert code == "250", answer
        status = detail.split(":")[0].split()[-1]
        assert status in ("accepted", "duplicate"), answer
        return Receipt(event_id, self.session_key, status == "duplicate")

    async def next_delivery(self, timeout_s: float = 5.0) -> Delivery:
        got = await self.sink.next(timeout_s)
        assert got.rcpt_tos == [CUSTOMER]
        return delivery_of(got)

    async def offered_actions(self, reply_to: str | None, timeout_s: float = 2.0) -> None:
        return None  # e-mail has no buttons (actions become a line of text)


def parse_or_error(data: bytes, name: str, settings: Settings) -> object:
    try:
        return EmailChannel.parse_payload(data, filename=name, settings=settings)
    except PayloadInvalid as exc:
        return exc


class TestEmailContract(ChannelContract):
    @pytest_asyncio.fixture
    async def harness(
        self, hub_factory: HubFactory, sink: SmtpSink
    ) -> AsyncIterator[EmailHarness]:
        hub = await hub_factory(
            channels=(EmailChannel,),
            email_address=SUPPORT,
            email_smtp_listen="127.0.0.1:0",
            email_smtp_url=sink.url,
        )
        yield EmailHarness(hub, sink)

    def test_parse_recorded_payloads(self, harness: ChannelHarness) -> None:
        """The contract's check, over the shared ``.eml`` corpus instead of JSON payloads."""
        files = sorted(EMAILS.rglob("*.eml"))
        assert len(files) > 50
        parsed = 0
        for path in files:
            data = path.read_bytes()
            result = parse_or_error(data, path.name, harness.hub.settings)
            if isinstance(result, PayloadInvalid):  # the only error a parser may raise
                assert str(result), path.name
                continue
            assert isinstance(result, Parsed | Ignored), path.name
            if isinstance(result, Parsed):
                parsed += 1
                env = result.envelope
                assert env.channel == "email"
                assert channel_of(env.session_key) == "email"
                assert env.event_id, path.name
                assert env.text, path.name
                again = EmailChannel.parse_payload(
                    data, filename=path.name, settings=harness.hub.settings
                )
                assert isinstance(again, Parsed)
                assert again.envelope.event_id == env.event_id
            else:
                assert result.reason
        assert parsed > 40
