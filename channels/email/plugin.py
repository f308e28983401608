"""The e-mail channel: a support mailbox read by IMAP or fed by SMTP, answered by SMTP.

Enabled when ``SWITCHBOARD_EMAIL_ADDRESS`` and an inbound source (``SWITCHBOARD_EMAIL_IMAP_URL``
or ``SWITCHBOARD_EMAIL_SMTP_LISTEN``) are set. Replies leave by ``SWITCHBOARD_EMAIL_SMTP_URL``.

Every inbound message (from :mod:`channels.email.imap` or :mod:`channels.email.smtp`) goes
through :meth:`EmailChannel.accept`: parse (:mod:`channels.email.translate`), drop mail that
must never be answered (loops, bounces, lists, our own), apply the per-sender rate limit
(``email_max_per_sender_per_hour``, a moving window from ``limits``), keep the attachments
under ``data_dir/email/attachments/<sha256>``, then ``hub.ingest``. The thread's reply context
(customer, subject, message ids) is kept in the conversation meta under ``email``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from aiohttp import web
from cachetools import LRUCache
from limits import RateLimitItemPerHour
from limits.aio.strategies import MovingWindowRateLimiter

from bot.channel import HubAPI, Ignored, ParseResult
from bot.config import Settings
from bot.envelope import OutboundKind, OutboundMessage, SessionKey
from bot.rate_limits import counted, counter_storage
from channels.email.imap import ImapReader, ImapUrl, UidState
from channels.email.render import render_reply
from channels.email.smtp import (
    Accepted,
    DeliveryRefused,
    InboundHandler,
    SmtpUrl,
    parse_listen,
    send_message,
    start_listener,
)
from channels.email.translate import (
    ThreadInfo,
    parse_session_key,
    parse_with_settings,
    thread_of,
)

log = logging.getLogger(__name__)

META_KEY = "email"
"""Conversation meta key of the thread's reply context (:meth:`ThreadInfo.to_meta`)."""

MIME_OVERHEAD_BYTES = 1024 * 1024
"""Headroom over the encoded attachment limit for headers and text parts (SMTP SIZE)."""


class EmailChannel:
    """The e-mail channel plugin (``email``).

    Attributes:
        imap_backoff_initial_s: first IMAP reconnect delay, seconds.
        imap_idle_timeout_s: IDLE is renewed after this many seconds.
        smtp_listen_port: the bound inbound SMTP port once started (``:0`` picks one).
    """

    name: ClassVar[str] = "email"
    imap_backoff_initial_s: float = 1.0
    imap_idle_timeout_s: float = 300.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.address = (settings.email_address or "").strip().lower()
        self._hub: HubAPI | None = None
        self._threads: LRUCache[SessionKey, ThreadInfo] = LRUCache(maxsize=10_000)
        self._limiter = MovingWindowRateLimiter(counter_storage(settings))
        self._rate = RateLimitItemPerHour(max(1, settings.email_max_per_sender_per_hour))
        self._smtp_out = (
            SmtpUrl.parse(settings.email_smtp_url.get_secret_value())
            if settings.email_smtp_url
            else None
        )
        self._imap_url = (
            ImapUrl.parse(settings.email_imap_url.get_secret_value())
            if settings.email_imap_url
            else None
        )
        self.imap: ImapReader | None = None
        self._imap_task: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self.smtp_listen_port: int | None = None

    # --- plugin protocol -----------------------------------------------------------------------
    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """True when the support address and an inbound source (IMAP or SMTP) are set."""
        return bool(settings.email_address) and bool(
            settings.email_imap_url or settings.email_smtp_listen
        )

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Parse a recorded ``.eml``: the envelope's text is the new reply only.

        Raises:
            bot.errors.PayloadInvalid: no headers, no sender, or an attachment over
                ``email_max_attachment_bytes`` (``PayloadTooLarge``).
        """
        return parse_with_settings(data, settings).result

    def routes(self) -> Sequence[web.RouteDef]:
        """No HTTP routes: mail arrives by IMAP or SMTP."""
        return []

    @property
    def max_message_bytes(self) -> int:
        """The largest raw message taken, in bytes: base64 of the attachment limit + headroom."""
        return self.settings.email_max_attachment_bytes * 4 // 3 + MIME_OVERHEAD_BYTES

    async def start(self, hub: HubAPI) -> None:
        """Start the inbound SMTP listener when ``hub.receives`` (not in workers).

        The IMAP reader is a pull receiver: :meth:`start_receiving`, one process at a time.
        """
        self._hub = hub
        if self._smtp_out is None:
            log.warning("email.no_outbound", extra={"channel": self.name})
        if self.settings.email_smtp_listen and hub.receives:
            host, port = parse_listen(self.settings.email_smtp_listen)
            self._server = await start_listener(
                InboundHandler(self.address, self.accept),
                host,
                port,
                data_size_limit=self.max_message_bytes,
                hostname=self.address.rsplit("@", 1)[-1] or "localhost",
            )
            self.smtp_listen_port = int(self._server.sockets[0].getsockname()[1])
            log.info(
                "email.smtp_listening",
                extra={"channel": self.name, "host": host, "port": self.smtp_listen_port},
            )

    def receiver_account(self) -> str | None:
        """``user@host/MAILBOX`` of the IMAP mailbox read, or None without IMAP."""
        url = self._imap_url
        return None if url is None else f"{url.user}@{url.host}/{url.mailbox}"

    async def start_receiving(self) -> None:
        """Start the IMAP reader (a task that reconnects by itself; :attr:`imap`)."""
        if self._imap_url is None or self._imap_task is not None:
            return
        self.imap = ImapReader(
            self._imap_url,
            UidState(self._data_dir() / f"imap-{self._imap_url.mailbox}.json"),
            self._deliver_imap,
            self._reject_imap,
            max_message_bytes=self.max_message_bytes,
            idle_timeout_s=self.imap_idle_timeout_s,
            backoff_initial_s=self.imap_backoff_initial_s,
        )
        self._imap_task = asyncio.create_task(self.imap.run(), name="email-imap")

    async def stop_receiving(self) -> None:
        """Stop the IMAP reader (logout; a message being ingested finishes, up to 5 s)."""
        if self.imap is not None:
            await self.imap.stop()
        task, self._imap_task = self._imap_task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def stop(self) -> None:
        """Stop reading mail (IMAP logout, SMTP listener closed)."""
        await self.stop_receiving()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def send(self, out: OutboundMessage) -> None:
        """Mail a reply to the customer in their thread (typing is not sent).

        Raises:
            bot.errors.ChannelUnavailable: the SMTP server is unreachable or deferred (4xx).
            DeliveryRefused: no outbound SMTP configured, or a permanent 5xx refusal.
        """
        if out.kind == OutboundKind.TYPING:
            return
        if self._smtp_out is None:
            raise DeliveryRefused("SWITCHBOARD_EMAIL_SMTP_URL is not set; cannot reply")
        thread = await self._thread(out.session_key)
        if out.kind == OutboundKind.AGENT:
            from_name = f"{out.author or 'Support'} ({self.settings.company_name})"
        else:
            from_name = self.settings.bot_name
        msg = render_reply(out, thread, from_address=self.address, from_name=from_name)
        await send_message(self._smtp_out, msg)
        log.info(
            "email.sent",
            extra={
                "channel": self.name,
                "session_key": out.session_key,
                "event_id": out.reply_to,
                "kind": str(out.kind),
                "message_id": msg["Message-ID"],
            },
        )

    # --- inbound -------------------------------------------------------------------------------
    async def accept(self, data: bytes) -> Accepted:
        """Parse, filter, rate-limit and ingest one inbound message.

        Returns:
            What happened (``accepted``, ``duplicate``, ``ignored``, ``rate_limited``).

        Raises:
            bot.errors.PayloadInvalid: unparsable (``PayloadTooLarge`` over the size limit).
            bot.errors.Draining: the hub is shutting down (keep the message for later).
            bot.errors.BackendUnavailable: the store cannot keep it (keep it for later).
        """
        hub = self._hub
        if hub is None:
            from bot.errors import Draining

            raise Draining("the e-mail channel is not started")
        parsed = await asyncio.to_thread(parse_with_settings, data, self.settings)
        if isinstance(parsed.result, Ignored):
            log.info("email.ignored", extra={"channel": self.name, "reason": parsed.result.reason})
            return Accepted("ignored", parsed.result.reason)
        env = parsed.result.envelope
        if not await counted(self._limiter.hit(self._rate, env.sender.id)):
            log.warning(
                "email.rate_limited",
                extra={"channel": self.name, "event_id": env.event_id, "sender": env.sender.id},
            )
            return Accepted("rate_limited", "too many messages from this sender; not answered")
        if parsed.payloads:
            await asyncio.to_thread(self._keep_attachments, parsed.payloads)
        thread = thread_of(env)
        self._threads[env.session_key] = thread
        receipt = await hub.ingest(env)
        if not receipt.duplicate:
            await hub.store.set_meta(env.session_key, META_KEY, thread.to_meta())
        log.info(
            "email.accepted",
            extra={
                "channel": self.name,
                "session_key": env.session_key,
                "event_id": env.event_id,
                "duplicate": receipt.duplicate,
                "verified": env.sender.verified,
            },
        )
        return Accepted("duplicate" if receipt.duplicate else "accepted", env.event_id)

    async def _deliver_imap(self, data: bytes, uid: int) -> None:
        from bot.errors import PayloadInvalid

        try:
            done = await self.accept(data)
        except PayloadInvalid as exc:
            log.warning(
                "email.rejected",
                extra={"channel": self.name, "uid": uid, "reason": str(exc), "status": exc.status},
            )
            return
        log.info("email.imap_processed", extra={"uid": uid, "status": done.status})

    async def _reject_imap(self, uid: int, size: int) -> None:
        log.warning(
            "email.rejected",
            extra={
                "channel": self.name,
                "uid": uid,
                "reason": f"message of {size} bytes exceeds {self.max_message_bytes} bytes",
                "status": 413,
            },
        )

    # --- helpers -------------------------------------------------------------------------------
    def _data_dir(self) -> Path:
        return self.settings.data_dir / "email"

    def attachment_path(self, ref: str) -> Path:
        """Where the bytes of an attachment reference ``sha256:<hex>`` are kept."""
        return self._data_dir() / "attachments" / ref.removeprefix("sha256:")

    def _keep_attachments(self, payloads: dict[str, bytes]) -> None:
        for ref, content in payloads.items():
            path = self.attachment_path(ref)
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)

    async def _thread(self, key: SessionKey) -> ThreadInfo:
        cached = self._threads.get(key)
        if cached is not None:
            return cached
        if self._hub is not None:
            conv = await self._hub.store.conversation(key)
            if conv is not None and isinstance(conv.meta.get(META_KEY), dict):
                thread = ThreadInfo.from_meta(conv.meta[META_KEY])
                self._threads[key] = thread
                return thread
        _, customer, root = parse_session_key(key)
        return ThreadInfo(
            customer=customer,
            customer_name=None,
            subject="",
            references=(root,),
            last_message_id=root,
        )
