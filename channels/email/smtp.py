"""SMTP both ways: the inbound listener (``aiosmtpd``) and the outbound sender (``aiosmtplib``).

Inbound (RFC 5321): teams that route support mail to the hub point an MX or a forwarding rule
at ``SWITCHBOARD_EMAIL_SMTP_LISTEN``. Recipients other than the support address get ``550``.
After DATA the message is parsed and stored by ``hub.ingest`` before the answer: ``250`` once it
is stored (or deliberately not answered: bounces, auto-replies, lists), ``451`` when the hub
cannot keep it now (the sending server retries), ``552`` over the size limit, ``550`` for a
message that cannot be parsed (no sender). The envelope sender becomes ``Return-Path`` (RFC 5321
§4.4), so bounces (``MAIL FROM:<>``) are recognized.

Outbound: ``smtp://user:pass@host:port`` (default port 587) uses STARTTLS whenever the server
offers it; ``smtps://`` (default port 465) is implicit TLS (RFC 8314). Credentials come from the
URL (percent-decoded) and are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import Envelope, Session

from bot.errors import (
    BackendUnavailable,
    ChannelUnavailable,
    ConfigError,
    Draining,
    PayloadInvalid,
    PayloadTooLarge,
    SwitchboardError,
)

log = logging.getLogger(__name__)


class DeliveryRefused(SwitchboardError):
    """The outbound SMTP server refused a reply permanently (5xx); retrying will not help.

    Attributes:
        code: the SMTP reply code.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"DeliveryRefused({str(self)!r}, code={self.code})"


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the channel did with an inbound message.

    Attributes:
        status: ``accepted``, ``duplicate``, ``ignored`` or ``rate_limited``.
        detail: the event id, or why it is not answered.
    """

    status: str
    detail: str


AcceptFn = Callable[[bytes], Awaitable[Accepted]]


@dataclass(frozen=True, slots=True)
class SmtpUrl:
    """An outbound ``smtp://`` or ``smtps://`` URL, parsed.

    Attributes:
        tls: implicit TLS (``smtps``).
        host: server name.
        port: default 587 (``smtp``) or 465 (``smtps``).
        user: login name, or None for no authentication.
        password: its password.
    """

    tls: bool
    host: str
    port: int
    user: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpUrl:
        """Parse an SMTP URL.

        Raises:
            ConfigError: for another scheme or no host.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("SWITCHBOARD_EMAIL_SMTP_URL must be smtp://host or smtps://host")
        tls = parts.scheme == "smtps"
        return cls(
            tls=tls,
            host=parts.hostname,
            port=parts.port or (465 if tls else 587),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


async def send_message(url: SmtpUrl, msg: EmailMessage, *, timeout_s: float = 30.0) -> None:
    """Submit ``msg`` to the outbound server (sender and recipients from its headers).

    Raises:
        ChannelUnavailable: connection failures, timeouts and 4xx answers (retry later).
        DeliveryRefused: a 5xx answer (permanent).
    """
    try:
        await aiosmtplib.send(
            msg,
            hostname=url.host,
            port=url.port,
            username=url.user,
            password=url.password,
            use_tls=url.tls,
            start_tls=False if url.tls else None,
            timeout=timeout_s,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        if codes and all(400 <= c < 500 for c in codes):
            raise ChannelUnavailable(f"SMTP recipients deferred: {codes}") from exc
        raise DeliveryRefused(f"SMTP recipients refused: {codes}", code=max(codes)) from exc
    except aiosmtplib.SMTPResponseException as exc:
        if 400 <= exc.code < 500:
            raise ChannelUnavailable(f"SMTP server deferred: {exc.code} {exc.message}") from exc
        raise DeliveryRefused(
            f"SMTP server refused: {exc.code} {exc.message}", code=exc.code
        ) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise ChannelUnavailable(f"SMTP server unreachable: {exc!r}") from exc


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


class InboundHandler:
    """aiosmtpd handler: accepts mail for ``address`` and answers only after ingest.

    Args:
        address: the support address (lower case); other recipients get 550.
        accept: the channel's ``accept(bytes) -> Accepted``.
    """

    def __init__(self, address: str, accept: AcceptFn) -> None:
        self.address = address.lower()
        self._accept = accept

    async def handle_RCPT(
        self,
        server: SMTPServerProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept only the support address."""
        if address.strip().lower() != self.address:
            return f"550 5.1.1 <{_one_line(address)}>: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTPServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        """Parse and ingest; the reply code tells the sending server what happened."""
        content = envelope.original_content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        mail_from = (envelope.mail_from or "").strip().strip("<>")
        data = f"Return-Path: <{mail_from}>\r\n".encode("utf-8", "replace") + content
        try:
            done = await self._accept(data)
        except PayloadTooLarge as exc:
            return f"552 5.3.4 {_one_line(str(exc))}"
        except PayloadInvalid as exc:
            return f"550 5.6.0 message rejected: {_one_line(str(exc))}"
        except (Draining, BackendUnavailable) as exc:
            log.warning("email.smtp_deferred", extra={"channel": "email", "error": repr(exc)})
            return "451 4.3.0 the hub cannot keep this message now; try again later"
        except Exception:  # a task boundary: the sending server retries later
            log.exception("email.smtp_accept_failed", extra={"channel": "email"})
            return "451 4.3.0 temporary failure; try again later"
        return f"250 2.0.0 {done.status}: {_one_line(done.detail)}"


async def start_listener(
    handler: InboundHandler, host: str, port: int, *, data_size_limit: int, hostname: str
) -> asyncio.Server:
    """Serve SMTP on ``host:port`` (port 0 picks a free one) on the running loop.

    ``data_size_limit`` (bytes) is announced with ``SIZE`` (RFC 1870); larger DATA gets 552.
    """
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        return SMTPServerProtocol(
            handler,
            data_size_limit=data_size_limit,
            hostname=hostname,
            ident="Switchboard",
            enable_SMTPUTF8=True,
        )

    return await loop.create_server(factory, host, port)


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) of ``SWITCHBOARD_EMAIL_SMTP_LISTEN``.

    Raises:
        ConfigError: when it is not ``host:port``.
    """
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError("SWITCHBOARD_EMAIL_SMTP_LISTEN must be host:port")
    return host.strip("[]") or "127.0.0.1", int(port)
