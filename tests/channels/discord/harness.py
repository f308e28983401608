"""The Discord harness: a real hub with the Discord channel, driven through a fake Discord.

The customer's side is the fake gateway (``MESSAGE_CREATE`` / ``INTERACTION_CREATE`` frames sent
to the real discord.py client); what reached the customer is read from the REST calls the
client made to the fake API.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from bot.channel import IngestReceipt
from bot.envelope import Citation, InboundMessage, SessionKey, session_key
from bot.store.base import Role, StoredMessage
from channels.discord.plugin import DiscordChannel
from channels.discord.render import embed_citations
from tests.channels.discord.frames import CUSTOMER, message
from tests.channels.support import Delivery, Receipt
from tests.fakes.discord_api import BOT_ID, FakeDiscord, Recorded

if TYPE_CHECKING:
    from bot.hub import Hub


class IngestSpy:
    """Wraps ``hub.ingest`` to record receipts by event id (the gateway has no acks)."""

    def __init__(self, hub: Hub) -> None:
        self.receipts: dict[str, list[IngestReceipt]] = {}
        self.messages: list[InboundMessage] = []
        self._changed = asyncio.Condition()
        original = hub.ingest

        async def ingest(msg: InboundMessage) -> IngestReceipt:
            receipt = await original(msg)
            async with self._changed:
                self.messages.append(msg)
                self.receipts.setdefault(msg.event_id, []).append(receipt)
                self._changed.notify_all()
            return receipt

        hub.ingest = ingest  # type: ignore[method-assign]

    async def wait(self, event_id: str, count: int = 1, timeout_s: float = 5.0) -> IngestReceipt:
        """The ``count``-th receipt of ``event_id``."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.receipts.get(event_id, [])) >= count)
        return self.receipts[event_id][count - 1]


class DiscordHarness:
    """Drives a DM conversation with the bot (contract suite) and reads deliveries."""

    name = "discord"
    plugin_cls = DiscordChannel

    def __init__(
        self, hub: Hub, fake: FakeDiscord, dm_channel: str = "1200000000000000001"
    ) -> None:
        self.hub = hub
        self.fake = fake
        self.spy = IngestSpy(hub)
        self.dm_channel = dm_channel
        self.session_key: SessionKey = session_key("discord", BOT_ID, dm_peer=CUSTOMER)
        self._consumed = 0
        self._stored_consumed = 0
        self._actions: dict[str | None, list[str]] = {}

    async def customer_says(self, text: str, *, event_id: str) -> Receipt:
        count = len(self.spy.receipts.get(event_id, [])) + 1
        await self.fake.dispatch(
            "MESSAGE_CREATE", message(event_id, text, channel_id=self.dm_channel)
        )
        r = await self.spy.wait(event_id, count)
        return Receipt(r.event_id, r.session_key, r.duplicate)

    def posts(self, channel_id: str | None = None) -> list[Recorded]:
        """Messages the bot posted in a channel (the DM by default)."""
        return self.fake.calls("POST", rf"/channels/{channel_id or self.dm_channel}/messages")

    async def next_delivery(self, timeout_s: float = 5.0) -> Delivery:
        try:
            posts = await self.fake.wait_for(
                "POST", rf"/channels/{self.dm_channel}/messages", self._consumed + 1, timeout_s
            )
        except TimeoutError:
            raise TimeoutError("no delivery") from None
        post = posts[self._consumed]
        self._consumed += 1
        stored = await self._next_stored()
        body: dict[str, Any] = post.json
        text = body.get("content") or ""
        citations: list[Citation] = []
        for embed in body.get("embeds") or []:
            shown = embed_citations(embed)
            assert [(c.title, c.url) for c in stored.citations] == shown
            citations = list(stored.citations)
        self._actions[stored.reply_to] = [
            button["custom_id"]
            for row in body.get("components") or []
            for button in row["components"]
        ]
        return Delivery(text, citations, stored.kind, stored.reply_to)

    async def _next_stored(self) -> StoredMessage:
        """The stored outbound message the latest post delivered (same order as sends)."""
        async with asyncio.timeout(2.0):
            while True:
                stored = [
                    m
                    for m in await self.hub.store.messages(self.session_key)
                    if m.role != Role.CUSTOMER
                ]
                if len(stored) > self._stored_consumed:
                    m = stored[self._stored_consumed]
                    self._stored_consumed += 1
                    return m
                await asyncio.sleep(0.02)

    async def offered_actions(self, reply_to: str | None, timeout_s: float = 2.0) -> list[str]:
        return self._actions.get(reply_to, [])

    async def close(self) -> None:
        return None


def mention_text(content: str) -> str:
    """Strip the bot mention the way a customer would not see it."""
    return re.sub(r"<@!?\d+>\s*", "", content)
