"""Fixtures of the e-mail channel tests: an SMTP sink, a Dovecot, an e-mail customer."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
import pytest
import pytest_asyncio
from bs4 import BeautifulSoup

from bot.envelope import Citation
from channels.email.render import SIGNATURE_SEPARATOR
from tests.channels.support import Delivery
from tests.fakes.dovecot import Dovecot, run_dovecot
from tests.fakes.smtp_sink import Received, SmtpSink, smtp_sink

SUPPORT = "support@example.com"
CUSTOMER = "jane@customer.example"
EMAILS = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "emails"


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with smtp_sink(user="bot", password="p@ss") as s:
        yield s


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with run_dovecot() as d:
        yield d


def customer_mail(
    text: str,
    *,
    message_id: str | None = None,
    subject: str = "Help with my account",
    sender: str = CUSTOMER,
    references: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A plain-text message from a customer to the support address."""
    msg = EmailMessage()
    msg["From"] = f"Jane Customer <{sender}>"
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>" if message_id else make_msgid(domain="customer.example")
    if references:
        msg["In-Reply-To"] = f"<{references[-1]}>"
        msg["References"] = " ".join(f"<{r}>" for r in references)
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(text)
    return msg


async def smtp_in(port: int, msg: EmailMessage, *, mail_from: str | None = None) -> str:
    """Send ``msg`` to the channel's inbound listener; the DATA answer ``"CODE text"``."""
    sender = mail_from if mail_from is not None else str(msg["From"].addresses[0].addr_spec)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    try:
        async with client:
            _, answer = await client.sendmail(sender, [SUPPORT], msg.as_bytes())
    except aiosmtplib.SMTPResponseException as exc:
        return f"{exc.code} {exc.message}"
    return f"250 {answer}"


def bare_id(value: object) -> str | None:
    m = re.search(r"<([^>]+)>", str(value or ""))
    return m.group(1) if m else None


def delivery_of(got: Received) -> Delivery:
    """What the customer sees: the text above the footer, citations from the HTML part."""
    text = got.text().replace("\r\n", "\n").split(SIGNATURE_SEPARATOR)[0].rstrip()
    soup = BeautifulSoup(got.html(), "html.parser")
    citations = [
        Citation(doc_id=str(t["data-doc-id"]), title=t.get_text(), url=t.get("href"))  # type: ignore[arg-type]
        for t in soup.select("[data-doc-id]")
    ]
    return Delivery(
        text,
        citations,
        str(got.message["X-Switchboard-Kind"]),
        bare_id(got.message["In-Reply-To"]),
    )
