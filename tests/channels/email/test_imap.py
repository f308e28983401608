"""End to end against a real Dovecot: IMAP APPEND in, SMTP replies out, restarts, UIDVALIDITY."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path

import aioimaplib
import pytest

from bot.errors import BackendUnavailable
from bot.hub import Hub
from bot.store.base import Role
from channels.email.plugin import EmailChannel
from channels.email.translate import email_session_key
from channels.memory.pytest_plugin import ScriptedAgent, make_settings, started_hub
from tests.channels.email.conftest import CUSTOMER, SUPPORT, bare_id, customer_mail, delivery_of
from tests.fakes.dovecot import Dovecot
from tests.fakes.smtp_sink import SmtpSink


@asynccontextmanager
async def email_hub(data_dir: Path, dovecot: Dovecot, sink: SmtpSink) -> AsyncIterator[Hub]:
    settings = make_settings(
        data_dir,
        email_address=SUPPORT,
        email_imap_url=dovecot.imap_url,
        email_smtp_url=sink.url,
    )
    channel = EmailChannel(settings)
    channel.imap_backoff_initial_s = 0.05
    async with started_hub(settings, agent=ScriptedAgent(), channels=[channel]) as hub:
        assert channel.imap is not None
        await asyncio.wait_for(channel.imap.ready.wait(), 5.0)
        yield hub


async def imap_client(dovecot: Dovecot) -> aioimaplib.IMAP4:
    client = aioimaplib.IMAP4(dovecot.host, dovecot.port, timeout=5)
    await client.wait_hello_from_server()
    assert (await client.login(dovecot.user, dovecot.password)).result == "OK"
    return client


async def append(dovecot: Dovecot, *messages: EmailMessage) -> None:
    client = await imap_client(dovecot)
    for msg in messages:
        assert (await client.append(msg.as_bytes(), mailbox="INBOX")).result == "OK"
    await client.logout()


async def uidvalidity(dovecot: Dovecot) -> int:
    client = await imap_client(dovecot)
    resp = await client.select("INBOX")
    await client.logout()
    line = next(x for x in resp.lines if b"UIDVALIDITY" in x)
    return int(line.split(b"UIDVALIDITY ")[1].split(b"]")[0])


async def no_more(sink: SmtpSink, timeout_s: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await sink.next(timeout_s)


async def test_imap_thread_answered_and_restart_neither_skips_nor_repeats(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink
) -> None:
    data_dir = tmp_path / "hub"
    async with email_hub(data_dir, dovecot, sink) as hub:
        await append(dovecot, customer_mail("How do I reset my password?", message_id="a1@c.x"))
        reply = await sink.next()
        msg = reply.message
        assert reply.rcpt_tos == [CUSTOMER]
        assert reply.login == "bot"  # authenticated with the credentials of the URL
        assert msg.get_content_type() == "multipart/alternative"
        assert msg["Subject"] == "Re: Help with my account"
        assert bare_id(msg["In-Reply-To"]) == "a1@c.x"
        assert "<a1@c.x>" in str(msg["References"])
        assert msg["Auto-Submitted"] == "auto-replied"
        assert delivery_of(reply).text == "Echo: How do I reset my password?"
        assert 'href="https://docs.example.com/guide"' in reply.html()

        # The customer answers in the thread, quoting us: same session, new text only.
        follow = customer_mail(
            "Thanks, and how do I change my e-mail?\n\n"
            "On Mon, Jan 6, 2025 at 10:00 AM Switchboard <support@example.com> wrote:\n"
            "> Echo: How do I reset my password?\n",
            message_id="a2@c.x",
            subject="Re: Help with my account",
            references=["a1@c.x", str(bare_id(msg["Message-ID"]))],
        )
        await append(dovecot, follow)
        second = await sink.next()
        assert delivery_of(second).text == "Echo: Thanks, and how do I change my e-mail?"
        assert bare_id(second.message["In-Reply-To"]) == "a2@c.x"
        refs = str(second.message["References"]).split()
        assert refs[0] == "<a1@c.x>"
        assert refs[-1] == "<a2@c.x>"
        assert len(refs) == 3
        assert second.message["Subject"] == "Re: Help with my account"
        key = email_session_key(SUPPORT, CUSTOMER, "a1@c.x")
        customer = [m for m in await hub.store.messages(key) if m.role == Role.CUSTOMER]
        assert [m.event_id for m in customer] == ["a1@c.x", "a2@c.x"]

    # Mail that arrives while the hub is down is answered after the restart, once each.
    await append(
        dovecot,
        customer_mail("Question three", message_id="c3@c.x", subject="Billing"),
        customer_mail("Question four", message_id="d4@c.x", subject="Invoices"),
    )
    async with email_hub(data_dir, dovecot, sink):
        got = [await sink.next(), await sink.next()]
        assert [bare_id(g.message["In-Reply-To"]) for g in got] == ["c3@c.x", "d4@c.x"]
        await no_more(sink)
    state = json.loads((data_dir / "email" / "imap-INBOX.json").read_text())
    assert state["last_uid"] == 4


async def test_message_not_marked_processed_when_the_hub_cannot_store_it(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink
) -> None:
    async with email_hub(tmp_path / "hub", dovecot, sink) as hub:
        real = hub.ingest
        calls = 0

        async def flaky(msg):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 1:
                raise BackendUnavailable("database down")
            return await real(msg)

        hub.ingest = flaky  # type: ignore[method-assign]
        await append(dovecot, customer_mail("Are you there?", message_id="f1@c.x"))
        reply = await sink.next(5.0)
        assert bare_id(reply.message["In-Reply-To"]) == "f1@c.x"
        assert calls == 2
        await no_more(sink)


async def test_uidvalidity_change_skips_nothing_and_repeats_nothing(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink
) -> None:
    data_dir = tmp_path / "hub"
    first = customer_mail("First question", message_id="u1@c.x")
    async with email_hub(data_dir, dovecot, sink):
        await append(dovecot, first)
        await sink.next()
    old = json.loads((data_dir / "email" / "imap-INBOX.json").read_text())["uidvalidity"]
    # The mailbox is recreated (e.g. restored from a backup): new UIDVALIDITY, UIDs from 1.
    for _ in range(3):
        dovecot.reset_mailbox()
        await append(dovecot, first, customer_mail("New question", message_id="u2@c.x"))
        if await uidvalidity(dovecot) != old:
            break
        await asyncio.sleep(1.05)  # Dovecot derives UIDVALIDITY from the clock
    assert await uidvalidity(dovecot) != old
    async with email_hub(data_dir, dovecot, sink):
        reply = await sink.next()
        assert bare_id(reply.message["In-Reply-To"]) == "u2@c.x"
        await no_more(sink)
    state = json.loads((data_dir / "email" / "imap-INBOX.json").read_text())
    assert state["uidvalidity"] != old
    assert state["last_uid"] == 2
