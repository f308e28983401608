"""The memory channel: a complete in-process channel (errbot's test backend, as a channel).

Nothing leaves the process: :meth:`MemoryChannel.push_message` plays the customer (it builds a
real :class:`~bot.envelope.InboundMessage` and calls ``hub.ingest``, exactly as a webhook would)
and :meth:`MemoryChannel.send` records what the hub delivers, so tests and ``switchboard chat``
drive the same ingest → lanes → agent → deliver path as production channels.

Session keys: ``memory:default:{conversation}`` (one conversation per key).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import ClassVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bot.channel import HubAPI, Ignored, IngestReceipt, Parsed, ParseResult
from bot.config import Settings
from bot.envelope import (
    InboundMessage,
    OutboundKind,
    OutboundMessage,
    Participant,
    SessionKey,
    session_key,
)
from bot.payload import parse_json_model

ACCOUNT = "default"


class MemoryPayload(BaseModel):
    """A recorded memory-channel message, for ``switchboard parse memory FILE``.

    ``{"text": str, "user_id"?: str, "conversation"?: str, "event_id"?: str, "action"?: str}``
    """

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    user_id: str = Field(default="u1", min_length=1)
    user_name: str | None = None
    conversation: str = Field(default="c1", min_length=1)
    event_id: str | None = Field(default=None, min_length=1)
    action: str | None = Field(default=None, min_length=1)


def memory_session_key(conversation: str) -> SessionKey:
    """The session key of a memory conversation: ``memory:default:{conversation}``."""
    return session_key(MemoryChannel.name, ACCOUNT, chat=conversation)


def build_envelope(
    text: str,
    *,
    user_id: str,
    conversation: str,
    event_id: str,
    action: str | None = None,
    user_name: str | None = None,
    raw: dict[str, object] | None = None,
) -> InboundMessage:
    """Build the envelope of one memory message (pure).

    Raises:
        ValueError: when ``conversation`` or ``user_id`` is empty.
    """
    if not user_id:
        raise ValueError("user_id must not be empty")
    return InboundMessage(
        event_id=event_id,
        channel=MemoryChannel.name,
        account=ACCOUNT,
        session_key=memory_session_key(conversation),
        sender=Participant(id=user_id, name=user_name, verified=True),
        text=text,
        action=action,
        is_direct=True,
        raw=dict(raw or {}),
    )


class MemoryChannel:
    """The in-process channel.

    Attributes:
        outbox: every message the hub delivered, in order (typing indicators included).
    """

    name: ClassVar[str] = "memory"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outbox: list[OutboundMessage] = []
        self._pending: list[OutboundMessage] = []
        self._cond = asyncio.Condition()
        self._hub: HubAPI | None = None

    # --- ChannelPlugin ------------------------------------------------------------------------
    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Always enabled: the channel needs no credentials."""
        return True

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Parse a recorded :class:`MemoryPayload` JSON body into an envelope.

        A payload without ``event_id`` gets one derived from its bytes (SHA-256), so parsing is
        deterministic.

        Raises:
            PayloadInvalid: malformed JSON or a schema violation (``field`` names it).
        """
        payload = parse_json_model(MemoryPayload, data)
        if not payload.text and payload.action is None:
            return Ignored("empty message")
        event_id = payload.event_id or hashlib.sha256(data).hexdigest()[:32]
        return Parsed(
            build_envelope(
                payload.text,
                user_id=payload.user_id,
                user_name=payload.user_name,
                conversation=payload.conversation,
                event_id=event_id,
                action=payload.action,
                raw=json.loads(data),
            )
        )

    def routes(self) -> Sequence[web.RouteDef]:
        """No HTTP routes: the channel lives in the process."""
        return []

    async def start(self, hub: HubAPI) -> None:
        """Remember the hub that :meth:`push_message` feeds."""
        self._hub = hub

    async def stop(self) -> None:
        """Nothing to disconnect; pending outbound messages stay inspectable."""

    async def send(self, out: OutboundMessage) -> None:
        """Record a delivered message.

        Every message goes to :attr:`outbox`; all but typing indicators also go to the queue
        :meth:`pop_message` reads.
        """
        self.outbox.append(out)
        if out.kind == OutboundKind.TYPING:
            return
        async with self._cond:
            self._pending.append(out)
            self._cond.notify_all()

    # --- the customer's side ----------------------------------------------------------------
    async def push_message(
        self,
        text: str,
        *,
        user_id: str = "u1",
        conversation: str = "c1",
        event_id: str | None = None,
        action: str | None = None,
        user_name: str | None = None,
    ) -> IngestReceipt:
        """Send a customer message into the hub (``hub.ingest``), as a platform webhook would.

        Args:
            text: the message text.
            user_id: the customer's id (verified: the process vouches for it).
            conversation: names the session (``memory:default:{conversation}``).
            event_id: the dedupe id; a fresh UUID when None.
            action: a pressed button's id (e.g. ``handoff.request``).
            user_name: the customer's display name.

        Returns:
            The hub's receipt (``duplicate`` True for a repeated ``event_id``).

        Raises:
            RuntimeError: when the channel was not started by a hub.
            bot.errors.Draining: the hub is shutting down.
        """
        if self._hub is None:
            raise RuntimeError("MemoryChannel.push_message before the hub started the channel")
        msg = build_envelope(
            text,
            user_id=user_id,
            user_name=user_name,
            conversation=conversation,
            event_id=event_id or uuid.uuid4().hex,
            action=action,
        )
        return await self._hub.ingest(msg)

    async def pop_message(
        self, session_key: SessionKey | str | None = None, timeout_s: float = 5.0
    ) -> OutboundMessage:
        """Take the oldest delivered message (of ``session_key``, or of any session).

        Typing indicators are not returned (see :attr:`outbox`).

        Args:
            session_key: only messages of this session; None for any.
            timeout_s: seconds to wait for one.

        Raises:
            TimeoutError: when none arrived within ``timeout_s``.
        """

        def take() -> OutboundMessage | None:
            for i, out in enumerate(self._pending):
                if session_key is None or out.session_key == session_key:
                    return self._pending.pop(i)
            return None

        async with asyncio.timeout(timeout_s), self._cond:
            while (found := take()) is None:
                await self._cond.wait()
            return found

    def pending(self, session_key: SessionKey | str | None = None) -> list[OutboundMessage]:
        """Delivered messages not yet popped (of one session or all), oldest first."""
        return [o for o in self._pending if session_key is None or o.session_key == session_key]

    @staticmethod
    def session_key_for(conversation: str = "c1") -> SessionKey:
        """The session key :meth:`push_message` uses for ``conversation``."""
        return memory_session_key(conversation)
