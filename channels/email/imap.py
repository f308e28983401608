r"""Inbound mail by IMAP (RFC 9051/3501) with IDLE (RFC 2177), on ``aioimaplib``.

:class:`ImapReader` keeps one connection to the support mailbox. After each (re)connect it
fetches every message above the last processed UID, in UID order, hands each one's bytes to the
channel (which stores it through ``hub.ingest``), sets ``\\Seen`` and only then records the UID as
processed (:class:`UidState`, a small JSON file in ``data_dir``). A crash between ingest and the
record re-fetches that message at restart; the hub's dedupe by ``Message-ID`` makes it a no-op.
Then it waits in IDLE (or polls when the server lacks IDLE) for new mail.

UIDVALIDITY (RFC 9051 §2.3.1.1): when the server's value differs from the recorded one (the
mailbox was recreated, or on the first start), UIDs are meaningless; the reader then takes every
message that is not ``\\Seen`` below the current UIDNEXT and everything above it, so nothing new is
skipped, and the hub's dedupe keeps already-answered mail from being answered twice.

Connection failures reconnect with exponential backoff and jitter (tenacity).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aioimaplib
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from bot.errors import BackendUnavailable, ConfigError, Draining, SwitchboardError

log = logging.getLogger(__name__)

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_FETCH_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")


class ImapError(SwitchboardError):
    """The IMAP server refused a command or the connection failed (retried with backoff)."""


@dataclass(frozen=True, slots=True)
class ImapUrl:
    """``imap://user:pass@host:port/MAILBOX`` or ``imaps://...`` (implicit TLS, RFC 8314).

    Attributes:
        tls: True for ``imaps``.
        host: server name.
        port: default 143 (``imap``) or 993 (``imaps``).
        user: login name (percent-decoded).
        password: password (percent-decoded; never logged).
        mailbox: the folder to read, default ``INBOX``.
    """

    tls: bool
    host: str
    port: int
    user: str
    password: str
    mailbox: str = "INBOX"

    @classmethod
    def parse(cls, url: str) -> ImapUrl:
        """Parse an IMAP URL.

        Raises:
            ConfigError: for another scheme or a URL without host or user.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps"):
            raise ConfigError("SWITCHBOARD_EMAIL_IMAP_URL must start with imap:// or imaps://")
        if not parts.hostname or not parts.username:
            raise ConfigError("SWITCHBOARD_EMAIL_IMAP_URL needs user:password@host")
        tls = parts.scheme == "imaps"
        mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
        return cls(
            tls=tls,
            host=parts.hostname,
            port=parts.port or (993 if tls else 143),
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            mailbox=mailbox,
        )


@dataclass(slots=True)
class ImapState:
    r"""What was processed in one mailbox.

    Attributes:
        uidvalidity: the mailbox's UIDVALIDITY when ``last_uid`` was recorded.
        last_uid: the highest UID processed (ingested, ignored or rejected).
        seen_floor: UIDs at or below this that are ``\\Seen`` are skipped (they were in the
            mailbox and read before this UIDVALIDITY was first seen).
    """

    uidvalidity: int | None = None
    last_uid: int = 0
    seen_floor: int = 0


class UidState:
    """:class:`ImapState` persisted as JSON at ``path`` (atomic replace, fsync'd)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> ImapState:
        """The recorded state, or a fresh one when there is none (or it is unreadable)."""
        try:
            data = json.loads(self.path.read_text())
            return ImapState(
                uidvalidity=data.get("uidvalidity"),
                last_uid=int(data.get("last_uid", 0)),
                seen_floor=int(data.get("seen_floor", 0)),
            )
        except FileNotFoundError:
            return ImapState()
        except (ValueError, TypeError, AttributeError):
            log.warning("email.imap_state_unreadable", extra={"path": str(self.path)})
            return ImapState()

    async def save(self, state: ImapState) -> None:
        """Write ``state`` durably (off the event loop)."""
        await asyncio.to_thread(self._write, json.dumps(asdict(state)))

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


DeliverFn = Callable[[bytes, int], Awaitable[None]]
"""``await deliver(message_bytes, uid)``: store it (raise ``Draining``/``BackendUnavailable``
to keep it for later); return when it is safe to mark processed."""

RejectFn = Callable[[int, int], Awaitable[None]]
"""``await reject_oversized(uid, size_bytes)``: a message too large to fetch."""


def _lines(response: aioimaplib.Response) -> list[bytes | bytearray]:
    return [line for line in response.lines if isinstance(line, bytes | bytearray)]


def _check(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        detail = b" ".join(bytes(x) for x in _lines(response))[-200:].decode("ascii", "replace")
        raise ImapError(f"IMAP {what} failed: {response.result} {detail}")
    return response


class ImapReader:
    """Reads one mailbox forever: fetch new mail, then IDLE; reconnect with backoff.

    Args:
        url: where and how to log in.
        state: the UID record.
        deliver: called with each new message's bytes, in UID order.
        reject_oversized: called instead of ``deliver`` for messages over
            ``max_message_bytes`` (their bodies are not fetched).
        max_message_bytes: the largest message fetched, in bytes (``RFC822.SIZE``).
        idle_timeout_s: re-issue IDLE after this many seconds (RFC 2177 asks < 29 minutes).
        poll_interval_s: seconds between polls when the server has no IDLE.
        backoff_initial_s: first reconnect delay, seconds (doubles, with jitter).
        backoff_max_s: largest reconnect delay, seconds.
        timeout_s: per-command timeout, seconds.
    """

    def __init__(
        self,
        url: ImapUrl,
        state: UidState,
        deliver: DeliverFn,
        reject_oversized: RejectFn,
        *,
        max_message_bytes: int,
        idle_timeout_s: float = 300.0,
        poll_interval_s: float = 60.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.state = state
        self._deliver = deliver
        self._reject = reject_oversized
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_s = idle_timeout_s
        self.poll_interval_s = poll_interval_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.ready = asyncio.Event()
        """Set while logged in and caught up (waiting in IDLE or between polls)."""
        self._stopping = asyncio.Event()
        self._client: aioimaplib.IMAP4 | None = None
        self._wake = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Read until :meth:`stop`; never raises except ``CancelledError``."""
        while not self._stopping.is_set():
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(
                        (ImapError, OSError, TimeoutError, aioimaplib.Abort, aioimaplib.Error)
                    ),
                    wait=wait_exponential_jitter(
                        multiplier=self.backoff_initial_s, max=self.backoff_max_s
                    ),
                    before_sleep=self._log_retry,
                ):
                    with attempt:
                        await self._connect()
                await self._serve()
            except asyncio.CancelledError:
                raise
            except (Draining, BackendUnavailable) as exc:
                log.warning("email.imap_hub_unavailable", extra={"error": repr(exc)})
            except Exception:  # a task boundary: log and reconnect
                log.exception("email.imap_session_failed", extra={"channel": "email"})
            finally:
                self.ready.clear()
                await self._disconnect()
            if not self._stopping.is_set():
                await self._sleep(self.backoff_initial_s)

    async def stop(self) -> None:
        """End the session (logout) and make :meth:`run` return."""
        self._stopping.set()
        self._wake.set()
        client = self._client
        if client is not None:
            with contextlib.suppress(OSError, aioimaplib.Abort, aioimaplib.Error):
                await client.stop_wait_server_push()

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "email.imap_reconnecting",
            extra={
                "channel": "email",
                "attempt": state.attempt_number,
                "host": self.url.host,
                "error": repr(exc),
            },
        )

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # --- connection ----------------------------------------------------------------------------
    async def _connect(self) -> None:
        if self._stopping.is_set():
            return
        await self._disconnect()
        if self.url.tls:
            client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
                self.url.host,
                self.url.port,
                timeout=self.timeout_s,
                ssl_context=ssl.create_default_context(),
            )
        else:
            client = aioimaplib.IMAP4(self.url.host, self.url.port, timeout=self.timeout_s)
        self._client = client
        await asyncio.wait_for(client.wait_hello_from_server(), self.timeout_s)
        _check(await client.login(self.url.user, self.url.password), "LOGIN")
        log.info("email.imap_connected", extra={"channel": "email", "host": self.url.host})

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.has_pending_idle():
                client.idle_done()
            await asyncio.wait_for(client.logout(), 2.0)
        except (OSError, TimeoutError, aioimaplib.Abort, aioimaplib.Error, AttributeError):
            pass

    # --- the session ---------------------------------------------------------------------------
    async def _serve(self) -> None:
        client = self._client
        if client is None:
            return
        selected = _check(await client.select(self.url.mailbox), "SELECT")
        blob = b" ".join(bytes(x) for x in _lines(selected))
        validity_m, next_m = _UIDVALIDITY.search(blob), _UIDNEXT.search(blob)
        if validity_m is None:
            raise ImapError("SELECT answered no UIDVALIDITY")
        validity = int(validity_m.group(1))
        uidnext = int(next_m.group(1)) if next_m else 1
        state = self.state.load()
        if state.uidvalidity != validity:
            if state.uidvalidity is not None:
                log.warning(
                    "email.imap_uidvalidity_changed",
                    extra={"channel": "email", "old": state.uidvalidity, "new": validity},
                )
            state = ImapState(uidvalidity=validity, last_uid=0, seen_floor=uidnext - 1)
            await self.state.save(state)
        idle = client.has_capability("IDLE")
        while not self._stopping.is_set():
            await self._process_new(client, state)
            self.ready.set()
            if self._stopping.is_set():
                break
            if idle:
                await self._idle(client)
            else:
                await self._sleep(self.poll_interval_s)

    async def _idle(self, client: aioimaplib.IMAP4) -> None:
        waiter = await client.idle_start(timeout=self.idle_timeout_s)
        try:
            while client.has_pending_idle() and not self._stopping.is_set():
                try:
                    push = await client.wait_server_push(timeout=self.idle_timeout_s)
                except TimeoutError:
                    break
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                if isinstance(push, list) and any(
                    isinstance(line, bytes | bytearray) and b"EXISTS" in line for line in push
                ):
                    break
        finally:
            if client.has_pending_idle():
                client.idle_done()
            await asyncio.wait_for(waiter, self.timeout_s)

    async def _process_new(self, client: aioimaplib.IMAP4, state: ImapState) -> None:
        listing = _check(
            await client.uid("fetch", f"{state.last_uid + 1}:*", "(UID FLAGS RFC822.SIZE)"),
            "FETCH",
        )
        found: dict[int, tuple[bool, int]] = {}
        for line in _lines(listing):
            uid_m = _FETCH_UID.search(line)
            if uid_m is None or b"FETCH" not in line:
                continue
            flags_m = _FETCH_FLAGS.search(line)
            size_m = _FETCH_SIZE.search(line)
            seen = flags_m is not None and b"\\Seen" in flags_m.group(1)
            found[int(uid_m.group(1))] = (seen, int(size_m.group(1)) if size_m else 0)
        for uid in sorted(found):
            if self._stopping.is_set():
                return
            seen, size = found[uid]
            if uid <= state.last_uid or (uid <= state.seen_floor and seen):
                continue
            if size > self.max_message_bytes:
                await self._reject(uid, size)
            else:
                body = _check(await client.uid("fetch", str(uid), "(BODY.PEEK[])"), "FETCH")
                data = next((bytes(x) for x in body.lines if isinstance(x, bytearray)), None)
                if data is None:
                    raise ImapError(f"FETCH of UID {uid} returned no body")
                await self._deliver(data, uid)
                _check(await client.uid("store", str(uid), "+FLAGS.SILENT (\\Seen)"), "STORE")
            state.last_uid = uid
            await self.state.save(state)
