"""The :class:`ChannelPlugin` protocol and what a plugin sees of the hub (:class:`HubAPI`).

A channel plugin verifies a platform's request, parses it with a pure function into an
:class:`~bot.envelope.InboundMessage`, hands it to :meth:`HubAPI.ingest`, and acknowledges the
platform only after ``ingest`` returned (the message is then durable). Replies come back through
:meth:`ChannelPlugin.send`. Plugins are found by the ``switchboard.channels`` entry point group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from aiohttp import web

from bot.config import Settings
from bot.envelope import InboundMessage, OutboundMessage, SessionKey
from bot.events import EventBus
from bot.store.base import Store


@dataclass(frozen=True, slots=True)
class Parsed:
    """A payload that became an envelope."""

    envelope: InboundMessage


@dataclass(frozen=True, slots=True)
class Ignored:
    """A valid payload the hub deliberately does not act on (bot echo, join, edit noise...)."""

    reason: str


ParseResult = Parsed | Ignored


@dataclass(frozen=True, slots=True)
class IngestReceipt:
    """What :meth:`HubAPI.ingest` answers.

    Attributes:
        event_id: the message's event id.
        session_key: its session.
        duplicate: True when the event was accepted before (nothing was done now).
        seq: the stored sequence number (of the first acceptance when duplicate, if known).
    """

    event_id: str
    session_key: SessionKey
    duplicate: bool
    seq: int | None


class HubAPI(Protocol):
    """The part of the hub a channel plugin uses."""

    settings: Settings
    store: Store
    events: EventBus
    receives: bool
    """True when this process takes platform traffic (webhooks, listeners, pull receivers);
    False in ``switchboard worker``, which uses its channels only to send."""

    async def ingest(self, msg: InboundMessage) -> IngestReceipt:
        """Deduplicate, persist and enqueue a customer message.

        Raises:
            bot.errors.Draining: the hub is shutting down (answer 503 so the platform retries).
            bot.errors.BackendUnavailable: the store or queue cannot keep it (answer 503).
        """


class ChannelPlugin(Protocol):
    """A platform integration. Constructed as ``cls(settings)``."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        """Keep the settings; connect nothing yet (that is :meth:`start`)."""

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """True when the settings hold this channel's credentials (or it needs none)."""

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Pure parser for ``switchboard parse``: a recorded payload to an envelope.

        Args:
            data: the recorded body (JSON, or an ``.eml`` for e-mail).
            filename: its name, for formats that depend on it.
            settings: for the account and bot identity.

        Raises:
            bot.errors.PayloadInvalid: the payload is malformed.
        """

    def routes(self) -> Sequence[web.RouteDef]:
        """HTTP routes this channel serves (webhooks, widget assets); may be empty."""

    async def start(self, hub: HubAPI) -> None:
        """Connect what sending needs; begin feeding ``hub.ingest`` if pushed to.

        Runs in every process, workers included. A listener the platform connects to (an SMTP
        server) starts only when ``hub.receives``. A receiver that fetches inbound traffic
        itself is not started here but by :meth:`PullReceiver.start_receiving`.
        """

    async def stop(self) -> None:
        """Disconnect; called during graceful shutdown."""

    async def send(self, out: OutboundMessage) -> None:
        """Deliver a reply to the customer.

        Raises:
            bot.errors.RateLimited: the platform asked to wait ``retry_after`` seconds.
            bot.errors.ChannelUnavailable: the platform is unreachable; retry later.
        """


@runtime_checkable
class StreamingChannel(Protocol):
    """A channel that can show an answer while it is written, by editing one message.

    Optional capability of a :class:`ChannelPlugin` (checked with ``isinstance``). The router
    streams only ``answer`` messages, never notices, handoffs or human agents' replies. Every
    call carries the answer's ``idempotency_key`` (``answer:{event_id}``): it names the one
    platform message of that answer. The caller never has two calls of one key in flight.

    The final :meth:`ChannelPlugin.send` of an ``OutboundMessage`` with the same key turns the
    streamed message into the final answer (full rendering: citations, buttons) instead of
    posting a new one; a final answer the platform must split edits the first part and posts
    the others. After that final send, :meth:`stream` calls with the key change nothing.
    """

    async def stream(self, out: OutboundMessage) -> None:
        """Show ``out.text`` (the answer so far, CommonMark) as a partial answer.

        The first call of a key posts a message; later calls edit it.

        Raises:
            bot.errors.RateLimited: the platform asked to wait ``retry_after`` seconds.
            bot.errors.ChannelUnavailable: the platform is unreachable.
            bot.errors.SwitchboardError: the platform refused the edit.
            ValueError: ``out.idempotency_key`` is None.
        """

    async def discard_stream(self, out: OutboundMessage) -> None:
        """Remove the partial message of ``out.idempotency_key`` (no final answer will come).

        Does nothing when nothing was streamed under that key or its final answer was sent.

        Raises:
            bot.errors.RateLimited, bot.errors.ChannelUnavailable, bot.errors.SwitchboardError:
                as :meth:`stream`.
        """


@runtime_checkable
class PullReceiver(Protocol):
    """A channel that fetches its inbound traffic itself (polling, IMAP, gateway, Socket Mode).

    The platform does not call us, so two processes fetching would compete or duplicate.

    The hub calls :meth:`ChannelPlugin.start` in every process, then, only in a process that
    receives (not ``switchboard worker``), :meth:`start_receiving`: directly with memory lanes
    (one process), under a Redis leader lease per ``(channel, receiver_account())`` with shared
    lanes, so one process at a time fetches (:mod:`bot.leader`). :meth:`stop_receiving` is
    called when the lease is lost and first at shutdown, before the hub drains; the receiver
    may be started again afterwards.
    """

    def receiver_account(self) -> str | None:
        """The account whose traffic this plugin fetches (bot, mailbox, app): the lease name.

        None when it fetches nothing in this configuration (e.g. Telegram by webhook).
        """

    async def start_receiving(self) -> None:
        """Begin fetching and feeding ``hub.ingest`` (called after :meth:`ChannelPlugin.start`).

        Raises:
            bot.errors.ChannelUnavailable: the platform cannot be reached (retried later).
        """

    async def stop_receiving(self) -> None:
        """Stop fetching; ingest what was already fetched and cannot be fetched again; idempotent.

        Sending keeps working until :meth:`ChannelPlugin.stop`.
        """
