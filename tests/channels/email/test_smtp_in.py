"""The inbound SMTP listener: acknowledgements after ingest, bad input, limits, escalation."""

from __future__ import annotations

import pytest

from bot.auth import add_agent
from bot.envelope import OutboundMessage
from bot.errors import ChannelUnavailable
from bot.hub import Hub
from bot.store.base import Role, SessionMode
from channels.email.plugin import EmailChannel
from channels.email.translate import email_session_key
from channels.memory.pytest_plugin import HubFactory
from tests.channels.email.conftest import (
    CUSTOMER,
    EMAILS,
    SUPPORT,
    bare_id,
    customer_mail,
    delivery_of,
    smtp_in,
)
from tests.fakes.smtp_sink import SmtpSink


async def make_hub(hub_factory: HubFactory, sink: SmtpSink, **overrides: object) -> Hub:
    return await hub_factory(
        channels=(EmailChannel,),
        email_address=SUPPORT,
        email_smtp_listen="127.0.0.1:0",
        email_smtp_url=sink.url,
        **overrides,
    )


def port(hub: Hub) -> int:
    channel = hub.channels["email"]
    assert isinstance(channel, EmailChannel)
    assert channel.smtp_listen_port
    return channel.smtp_listen_port


async def customer_messages(hub: Hub) -> list[str]:
    out = []
    for conv in await hub.store.conversations():
        out += [
            str(m.event_id)
            for m in await hub.store.messages(conv.session_key)
            if m.role == Role.CUSTOMER
        ]
    return out


async def test_oversized_attachment_gets_552_and_nothing_is_lost(
    hub_factory: HubFactory, sink: SmtpSink
) -> None:
    hub = await make_hub(hub_factory, sink)
    ok = await smtp_in(port(hub), customer_mail("first, accepted", message_id="ok1@c.x"))
    assert ok.startswith("250")
    assert "accepted" in ok
    await sink.next()
    big = customer_mail("here is the log", message_id="big@c.x")
    line = "x" * 999 + "\n"  # a log file just over 25 MiB, sent 8-bit as mail clients do
    log = line * (25 * 1024 * 1024 // 1000 + 2)
    big.add_attachment(log, subtype="plain", filename="huge.log", cte="8bit")
    answer = await smtp_in(port(hub), big)
    assert answer.startswith("552"), answer
    assert await customer_messages(hub) == ["ok1@c.x"]  # the accepted one is kept, no other


async def test_attachment_over_a_smaller_limit_is_rejected_with_its_name(
    hub_factory: HubFactory, sink: SmtpSink
) -> None:
    hub = await make_hub(hub_factory, sink, email_max_attachment_bytes=1000)
    msg = customer_mail("log attached", message_id="att@c.x")
    msg.add_attachment(b"x" * 1200, maintype="text", subtype="plain", filename="log.txt")
    answer = await smtp_in(port(hub), msg)
    assert answer.startswith("552")
    assert "log.txt" in answer
    assert "1000 bytes" in answer
    assert await customer_messages(hub) == []


async def test_broken_and_unanswerable_mail(hub_factory: HubFactory, sink: SmtpSink) -> None:
    hub = await make_hub(hub_factory, sink)
    no_sender = (EMAILS / "cpython_test_email" / "msg_40.eml").read_bytes()
    import aiosmtplib

    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await aiosmtplib.send(
            no_sender,
            hostname="127.0.0.1",
            port=port(hub),
            sender="x@y.z",
            recipients=[SUPPORT],
            start_tls=False,
        )
    assert info.value.code == 550
    assert "From" in info.value.message
    bounce = (EMAILS / "flanker_fixtures" / "bounce__no-mx.eml").read_bytes()
    _, answer = await aiosmtplib.send(
        bounce,
        hostname="127.0.0.1",
        port=port(hub),
        sender="mailer-daemon@example.net",
        recipients=[SUPPORT],
        start_tls=False,
    )
    assert "ignored" in answer
    assert "bounce" in answer
    broken = (EMAILS / "flanker_fixtures" / "missing-final-boundary.eml").read_bytes()
    _, answer = await aiosmtplib.send(
        broken,
        hostname="127.0.0.1",
        port=port(hub),
        sender="me@example.com",
        recipients=[SUPPORT],
        start_tls=False,
    )
    assert "accepted" in answer  # defects tolerated
    got = await sink.next()
    assert got.rcpt_tos == ["me@example.com"]
    assert delivery_of(got).text == "Echo: Some body"
    auto = customer_mail("I am out of office", headers={"Auto-Submitted": "auto-replied"})
    assert "ignored: auto-submitted" in await smtp_in(port(hub), auto)
    null_sender = await smtp_in(port(hub), customer_mail("hello"), mail_from="")
    assert "ignored: bounce (null Return-Path)" in null_sender
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await aiosmtplib.send(
            customer_mail("hi"),
            hostname="127.0.0.1",
            port=port(hub),
            recipients=["someone-else@example.com"],
            start_tls=False,
        )
    with pytest.raises(TimeoutError):
        await sink.next(0.3)


async def test_hub_that_cannot_keep_the_message_answers_451(
    hub_factory: HubFactory, sink: SmtpSink
) -> None:
    hub = await make_hub(hub_factory, sink)
    hub._draining = True  # the hub began shutting down
    answer = await smtp_in(port(hub), customer_mail("hello?", message_id="late@c.x"))
    hub._draining = False
    assert answer.startswith("451"), answer
    assert await customer_messages(hub) == []


async def test_per_sender_rate_limit(hub_factory: HubFactory, sink: SmtpSink) -> None:
    hub = await make_hub(hub_factory, sink, email_max_per_sender_per_hour=2)
    answers = [
        await smtp_in(port(hub), customer_mail(f"message {n}", message_id=f"rl{n}@c.x"))
        for n in range(3)
    ]
    assert ["accepted" in a for a in answers] == [True, True, False]
    assert "rate_limited" in answers[2]
    other = customer_mail("me too", message_id="o1@c.x", sender="other@c.x")
    assert "accepted" in await smtp_in(port(hub), other)


async def test_outbound_4xx_is_channel_unavailable(
    hub_factory: HubFactory, sink: SmtpSink
) -> None:
    hub = await make_hub(hub_factory, sink)
    sink.refuse_with = "451 4.3.2 try later"
    channel = hub.channels["email"]
    key = email_session_key(SUPPORT, CUSTOMER, "t@c.x")
    with pytest.raises(ChannelUnavailable):
        await channel.send(OutboundMessage(session_key=key, text="hi"))


async def test_escalation_round_trip_by_email(hub_factory: HubFactory, sink: SmtpSink) -> None:
    hub = await make_hub(hub_factory, sink)
    key = email_session_key(SUPPORT, CUSTOMER, "esc1@c.x")
    assert "accepted" in await smtp_in(
        port(hub), customer_mail("I want to talk to a person", message_id="esc1@c.x")
    )
    notice = await sink.next()
    assert notice.message["X-Switchboard-Kind"] == "handoff"
    assert bare_id(notice.message["In-Reply-To"]) == "esc1@c.x"
    conv = await hub.store.conversation(key)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED

    agent = await add_agent(hub.store, "ann", "correct horse battery", display_name="Ann")
    await hub.handoff.claim(key, agent)
    await hub.handoff.reply(key, agent, "Hi Jane, I reset it for you.")
    human = await sink.next()
    while human.message["X-Switchboard-Kind"] != "agent":  # "Ann joined" notice first
        human = await sink.next()
    assert human.rcpt_tos == [CUSTOMER]
    assert delivery_of(human).text == "Hi Jane, I reset it for you."
    assert human.message["X-Switchboard-Kind"] == "agent"
    assert human.message["Auto-Submitted"] is None
    assert "Ann" in str(human.message["From"])
    assert SUPPORT in str(human.message["From"])
    assert str(human.message["Subject"]) == "Re: Help with my account"
    assert str(human.message["References"]).split()[0] == "<esc1@c.x>"

    # While the human owns the session, the customer's reply reaches them, not the bot.
    reply = customer_mail("Thanks!", message_id="esc2@c.x", references=["esc1@c.x"])
    assert "accepted" in await smtp_in(port(hub), reply)
    with pytest.raises(TimeoutError):
        await sink.next(0.4)

    await hub.handoff.resolve(key, agent)
    while True:  # drain the notices of the resolution
        try:
            got = await sink.next(0.4)
        except TimeoutError:
            break
        assert got.message["X-Switchboard-Kind"] != "answer"
    again = customer_mail("One more question", message_id="esc3@c.x", references=["esc1@c.x"])
    assert "accepted" in await smtp_in(port(hub), again)
    answer = await sink.next()
    assert delivery_of(answer).text == "Echo: One more question"
