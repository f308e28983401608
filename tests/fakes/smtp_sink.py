"""An SMTP sink on 127.0.0.1 (aiosmtpd, port 0) that records every message it receives.

``async with smtp_sink(user="bot", password="pw") as sink:`` serves until the block ends;
``sink.url`` is an ``smtp://`` URL for ``SWITCHBOARD_EMAIL_SMTP_URL``; ``await sink.next()``
returns the next received :class:`Received` (parsed with ``policy.default``). With a user,
AUTH PLAIN/LOGIN is required (over plain TCP, as loopback tests have no TLS).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    """One message the sink accepted.

    Attributes:
        mail_from: the envelope sender.
        rcpt_tos: the envelope recipients.
        message: the parsed message.
        data: the raw bytes.
        login: the authenticated user, if any.
    """

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    data: bytes
    login: str | None

    def text(self) -> str:
        """The text/plain body."""
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())

    def html(self) -> str:
        """The text/html body."""
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None
        return str(part.get_content())


@dataclass
class SmtpSink:
    """A running sink (see the module docstring)."""

    host: str
    port: int
    user: str | None
    password: str | None
    received: list[Received] = field(default_factory=list)
    queue: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    refuse_with: str | None = None
    """When set (e.g. ``"451 4.3.0 busy"``), DATA is answered with it and nothing is kept."""

    @property
    def url(self) -> str:
        """``smtp://user:password@127.0.0.1:port``."""
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"smtp://{auth}{self.host}:{self.port}"

    async def next(self, timeout_s: float = 5.0) -> Received:
        """The next received message. Raises ``TimeoutError`` when none comes in time."""
        return await asyncio.wait_for(self.queue.get(), timeout_s)

    # aiosmtpd handler hooks
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_with:
            return self.refuse_with
        data = envelope.original_content or b""
        assert isinstance(data, bytes)
        msg = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(msg, EmailMessage)
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        got = Received(envelope.mail_from or "", list(envelope.rcpt_tos), msg, data, login or None)
        self.received.append(got)
        self.queue.put_nowait(got)
        return "250 2.0.0 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.user
            and data.password.decode() == self.password
        )
        return AuthResult(success=ok, auth_data=data.login if ok else None)


@asynccontextmanager
async def smtp_sink(
    user: str | None = None, password: str | None = None
) -> AsyncIterator[SmtpSink]:
    """Serve an SMTP sink on 127.0.0.1, port 0, for the duration of the block."""
    sink = SmtpSink("127.0.0.1", 0, user, password)
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        with warnings.catch_warnings():
            # AUTH without TLS is deliberate here: a loopback test server has no certificate.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(
                sink,
                hostname="sink.test",
                authenticator=sink.authenticate if user else None,
                auth_required=bool(user),
                auth_require_tls=False,
            )

    server = await loop.create_server(factory, "127.0.0.1", 0)
    sink.port = int(server.sockets[0].getsockname()[1])
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()
