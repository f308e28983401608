"""Drive a hub's Telegram channel as Telegram and its customers do.

Updates go in through the real webhook (signed with the secret token header); what the bot
says is read from the fake Bot API server (:mod:`tests.fakes.telegram_api`), where the real
PTB client delivered it.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from bs4 import BeautifulSoup

from bot.envelope import Citation, SessionKey
from bot.store.base import Role
from channels.telegram.plugin import TelegramChannel
from channels.telegram.render import SOURCES_HEADING
from channels.telegram.verify import SECRET_HEADER
from tests.channels.support import Delivery, Receipt
from tests.fakes.telegram_api import Call, FakeTelegramAPI

if TYPE_CHECKING:
    from bot.hub import Hub

SECRET = "test-secret_0123456789"
BOT_NAME = "acme_bot"
CUSTOMER_ID = 777001
Client = TestClient[web.Request, web.Application]


def telegram_settings(api: FakeTelegramAPI, **overrides: Any) -> dict[str, Any]:
    """Setting overrides of a hub whose Telegram channel talks to ``api``."""
    values: dict[str, Any] = {
        "telegram_bot_token": api.token,
        "telegram_api_url": api.url,
        "telegram_secret_token": SECRET,
        "telegram_bot_name": BOT_NAME,
    }
    values.update(overrides)
    return values


def user(uid: int = CUSTOMER_ID, first_name: str = "Ada") -> dict[str, Any]:
    """A Telegram ``User`` object."""
    return {"id": uid, "is_bot": False, "first_name": first_name, "language_code": "en"}


def private_chat(uid: int = CUSTOMER_ID) -> dict[str, Any]:
    """A private ``Chat`` object."""
    return {"id": uid, "type": "private", "first_name": "Ada"}


def html_to_text(html_text: str) -> str:
    """What a Telegram user reads for an HTML message."""
    return BeautifulSoup(html_text, "html.parser").get_text()


class TelegramHarness:
    """The contract harness (see ``tests/channels/contract.py``) for one private chat."""

    name = "telegram"
    plugin_cls = TelegramChannel

    def __init__(self, hub: Hub, client: Client, api: FakeTelegramAPI) -> None:
        self.hub = hub
        self.client = client
        self.api = api
        channel = hub.channels["telegram"]
        assert isinstance(channel, TelegramChannel)
        self.channel = channel
        self.session_key = SessionKey(f"telegram:{BOT_NAME}:dm:{CUSTOMER_ID}")
        self._update_ids: dict[str, int] = {}
        self._message_ids: dict[str, int] = {}
        self._event_of_message: dict[int, str] = {}
        self._counter = itertools.count(1000)
        self._seen_calls = 0
        self._delivered = 0
        self._keyboards: dict[str | None, list[str]] = {}

    @property
    def webhook_path(self) -> str:
        return f"/telegram/{BOT_NAME}"

    async def post_update(
        self, update: dict[str, Any], *, secret: str | None = SECRET
    ) -> ClientResponse:
        """POST one update to the webhook as Telegram does."""
        headers = {SECRET_HEADER: secret} if secret is not None else {}
        return await self.client.post(self.webhook_path, json=update, headers=headers)

    def platform_event_id(self, event_id: str) -> str:
        """The event id the hub stores for a contract event id (the update_id)."""
        return str(self.update_id(event_id))

    def update_id(self, event_id: str) -> int:
        """The update_id standing for a contract event id (stable per event id)."""
        if event_id not in self._update_ids:
            n = next(self._counter)
            self._update_ids[event_id] = n
            self._message_ids[event_id] = n + 50_000
            self._event_of_message[n + 50_000] = event_id
        return self._update_ids[event_id]

    def message_update(self, text: str, *, event_id: str) -> dict[str, Any]:
        """A private-chat text message update."""
        uid = self.update_id(event_id)
        return {
            "update_id": uid,
            "message": {
                "message_id": self._message_ids[event_id],
                "from": user(),
                "chat": private_chat(),
                "date": int(time.time()),
                "text": text,
            },
        }

    async def _stored_customer_event(self, update_id: int) -> bool:
        stored = await self.hub.store.messages(self.session_key)
        return any(m.role == Role.CUSTOMER and m.event_id == str(update_id) for m in stored)

    async def customer_says(self, text: str, *, event_id: str) -> Receipt:
        uid = self.update_id(event_id)
        before = await self._stored_customer_event(uid)
        resp = await self.post_update(self.message_update(text, event_id=event_id))
        assert resp.status == 200, await resp.text()
        after = await self._stored_customer_event(uid)
        assert after, "acknowledged before the message was stored"
        return Receipt(event_id, str(self.session_key), duplicate=before)

    async def _next_send(self, timeout_s: float) -> Call:
        """The next sendMessage to the customer's chat."""
        wanted = self._seen_calls + 1
        calls = await self.api.wait_for(
            "sendMessage", count=wanted, timeout_s=timeout_s, chat_id=CUSTOMER_ID
        )
        self._seen_calls = wanted
        return calls[wanted - 1]

    async def next_delivery(self, timeout_s: float = 5.0) -> Delivery:
        call = await self._next_send(timeout_s)
        text = html_to_text(call.params["text"])
        visible = [
            m
            for m in await self.hub.store.messages(self.session_key)
            if m.role != Role.CUSTOMER and m.kind not in ("note", "typing") and not m.internal
        ]
        stored = visible[self._delivered]
        self._delivered += 1
        body, _, sources = text.partition(f"\n\n{SOURCES_HEADING}\n")
        for citation in stored.citations:
            assert citation.title in sources, (citation, text)
        reply = call.params.get("reply_parameters") or {}
        reply_to = self._event_of_message.get(reply.get("message_id", -1))
        markup = call.params.get("reply_markup") or {}
        buttons = [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]
        # Keyboards are filed under the reply_to the hub was given (the wire's reply_parameters
        # exist only when the plugin knows the customer's Telegram message).
        by_update = {str(u): e for e, u in self._update_ids.items()}
        answered = by_update.get(stored.reply_to or "", stored.reply_to)
        self._keyboards.setdefault(answered, []).extend(buttons)
        citations = [
            Citation(doc_id=c.doc_id, title=c.title, url=c.url, score=c.score)
            for c in stored.citations
        ]
        return Delivery(body, citations, stored.kind, reply_to)

    async def offered_actions(self, reply_to: str | None, timeout_s: float = 2.0) -> list[str]:
        """Buttons of the deliveries read so far that answered ``reply_to``."""
        return self._keyboards.get(reply_to, [])

    async def close(self) -> None:
        return None
