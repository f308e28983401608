"""Where a Slack session's replies go: learnt from inbound payloads, kept in conversation meta.

An inbound message names its conversation (``D...`` of a DM, the channel and thread of a
mention); :class:`SlackAddressBook` remembers it in a bounded cache and in the conversation's
meta (``slack``), so any process can answer. A session never seen falls back to what its key
says (:func:`channels.slack.translate.address_of`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from cachetools import LRUCache

from bot.channel import HubAPI
from bot.envelope import InboundMessage, SessionKey
from bot.errors import SwitchboardError
from channels.slack import translate

log = logging.getLogger(__name__)

META_KEY = "slack"
"""Conversation meta key holding the reply address (:class:`SlackAddress` as a dict)."""
CACHE_SIZE = 50_000


@dataclass(frozen=True, slots=True)
class SlackAddress:
    """Where a session's replies go.

    Attributes:
        team: workspace id.
        channel: conversation id (``D...`` for a DM; a user id works too, it opens the DM).
        thread_ts: the thread to reply in (None for DMs).
        enterprise: Enterprise Grid organization id, when any.
    """

    team: str
    channel: str
    thread_ts: str | None = None
    enterprise: str | None = None


def address_from(msg: InboundMessage, body: dict[str, Any]) -> SlackAddress:
    """The reply address of an inbound message and the Slack payload it came in.

    Events name the conversation in ``event.channel``, interactivity payloads in
    ``container.channel_id`` or ``channel.id``; a DM without either uses the sender's user id.
    """
    event = body.get("event") if isinstance(body.get("event"), dict) else None
    channel: str | None = None
    if event is not None:
        channel = event.get("channel")
    else:
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return SlackAddress(
        team=msg.account,
        channel=channel or msg.sender.id,
        thread_ts=None if msg.is_direct else msg.thread_id,
        enterprise=translate.enterprise_of(body),
    )


class SlackAddressBook:
    """The reply addresses of Slack sessions (see the module docstring).

    Attributes:
        hub: the hub whose store keeps the addresses (None before the channel started: only
            the cache and the keys themselves are used).
    """

    def __init__(self) -> None:
        self.hub: HubAPI | None = None
        self._addresses: LRUCache[SessionKey, SlackAddress] = LRUCache(CACHE_SIZE)

    def note(self, key: SessionKey, address: SlackAddress) -> None:
        """Cache the address of ``key`` in this process (before the message is ingested)."""
        self._addresses[key] = address

    async def address_of(self, key: SessionKey) -> SlackAddress:
        """Where replies of a session go.

        Remembered, else stored in the conversation's meta, else derived from the key itself
        (a DM key names the user; a thread key its channel and thread).
        """
        cached = self._addresses.get(key)
        if cached is not None:
            return cached
        hub = self.hub
        if hub is not None:
            conv = await hub.store.conversation(key)
            stored = conv.meta.get(META_KEY) if conv is not None else None
            if isinstance(stored, dict):
                try:
                    address = SlackAddress(**stored)
                except TypeError:
                    address = None
                if address is not None:
                    self._addresses[key] = address
                    return address
        team, channel, thread, user = translate.address_of(key)
        target = channel or user
        assert target is not None
        return SlackAddress(team=team, channel=target, thread_ts=thread)

    async def remember(self, key: SessionKey, address: SlackAddress) -> None:
        """Store the address in the conversation's meta unless it is there already.

        A store failure is logged (``slack.meta_failed``): the cache still knows it.
        """
        hub = self.hub
        if hub is None:
            return
        conv = await hub.store.conversation(key)
        if conv is not None and conv.meta.get(META_KEY) == asdict(address):
            return
        try:
            await hub.store.set_meta(key, META_KEY, asdict(address))
        except SwitchboardError:
            log.warning("slack.meta_failed", exc_info=True, extra={"session_key": key})
