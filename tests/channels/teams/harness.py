"""Teams test helpers: activity builders (Teams' wire shape) and the channel harness.

The harness drives the real hub as Teams would: signed activities POSTed to
``/api/messages`` with a Bot Framework token from :class:`FakeBotFramework`, and deliveries read
from what reached the fake Bot Connector.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from bot.envelope import Citation, SessionKey, session_key
from channels.teams.plugin import TeamsChannel
from channels.teams.translate import ADAPTIVE_CARD, CITATION_ID_PREFIX
from tests.channels.support import Delivery, Receipt
from tests.fakes.botframework import FakeBotFramework, Posted

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
USER_ID = "29:1customer-teams-id"
AAD_USER = "6e2a6bb0-4f3a-4d59-9a0c-7a1b2c3d4e5f"
PERSONAL_CONV = "a:1personal-conversation"
CHANNEL_ID = "19:4a8c0b3e9f2d4c7a8b1e6f5d3c2b1a09@thread.tacv2"
GROUP_CONV = "19:c0ffee00aa11bb22cc33dd44ee55ff66@thread.v2"

_LINK = re.compile(r"\[(?P<title>.*)\]\((?P<url>[^)]*)\)$")


def bot_account(fake: FakeBotFramework) -> dict[str, str]:
    return {"id": f"28:{fake.app_id}", "name": "Switchboard"}


def activity(
    fake: FakeBotFramework,
    *,
    type: str = "message",
    text: str | None = None,
    event_id: str | None = None,
    conversation: dict[str, Any] | None = None,
    sender: dict[str, Any] | None = None,
    tenant: str = TENANT,
    **extra: Any,
) -> dict[str, Any]:
    """An activity as the Bot Connector posts it for Teams (personal chat by default)."""
    doc: dict[str, Any] = {
        "type": type,
        "id": event_id or uuid.uuid4().hex,
        "timestamp": "2024-05-02T09:14:03.112Z",
        "channelId": "msteams",
        "serviceUrl": fake.service_url,
        "from": sender or {"id": USER_ID, "name": "Megan Bowen", "aadObjectId": AAD_USER},
        "conversation": conversation
        or {"conversationType": "personal", "tenantId": tenant, "id": PERSONAL_CONV},
        "recipient": bot_account(fake),
        "channelData": {"tenant": {"id": tenant}},
        "locale": "en-US",
    }
    if text is not None:
        doc["text"] = text
        doc["textFormat"] = "plain"
    doc.update(extra)
    return doc


def channel_activity(
    fake: FakeBotFramework, *, root: str, text: str, **extra: Any
) -> dict[str, Any]:
    """A channel message mentioning the bot, in the reply chain of ``root``."""
    bot = bot_account(fake)
    return activity(
        fake,
        text=f"<at>{bot['name']}</at> {text}",
        conversation={
            "isGroup": True,
            "conversationType": "channel",
            "tenantId": TENANT,
            "id": f"{CHANNEL_ID};messageid={root}",
        },
        entities=[{"type": "mention", "text": f"<at>{bot['name']}</at>", "mentioned": bot}],
        **extra,
    )


def card_of(posted: Posted) -> dict[str, Any] | None:
    for att in posted.body.get("attachments") or []:
        if att.get("contentType") == ADAPTIVE_CARD:
            content: dict[str, Any] = att["content"]
            return content
    return None


def citations_of(posted: Posted) -> list[Citation]:
    card = card_of(posted)
    found: list[Citation] = []
    for block in (card or {}).get("body", []):
        block_id = str(block.get("id") or "")
        if not block_id.startswith(CITATION_ID_PREFIX):
            continue
        label = str(block["text"]).split(". ", 1)[1]
        m = _LINK.match(label)
        found.append(
            Citation(
                doc_id=block_id[len(CITATION_ID_PREFIX) :],
                title=m["title"] if m else label,
                url=m["url"] if m else None,
            )
        )
    return found


def actions_of(posted: Posted) -> list[str]:
    card = card_of(posted) or {}
    return [a["data"]["action"] for a in card.get("actions", []) if a["type"] == "Action.Submit"]


def delivery_of(posted: Posted) -> Delivery:
    return Delivery(
        text=str(posted.body.get("text", "")),
        citations=citations_of(posted),
        kind="message",
        reply_to=posted.reply_to,
    )


class TeamsHarness:
    """Drives the Teams channel as the Bot Connector and one customer in a personal chat."""

    name = "teams"
    plugin_cls = TeamsChannel

    def __init__(
        self,
        hub: Any,
        client: TestClient[web.Request, web.Application],
        fake: FakeBotFramework,
    ) -> None:
        self.hub = hub
        self.client = client
        self.fake = fake
        self.session_key: SessionKey = session_key("teams", TENANT, dm_peer=AAD_USER)
        self._cursor = 0

    async def post(
        self,
        doc: dict[str, Any] | bytes,
        *,
        token: str | None = None,
        authorization: str | None = None,
        path: str = "/api/messages",
    ) -> ClientResponse:
        """POST an activity with a valid token (or the given one / header)."""
        if authorization is None:
            authorization = f"Bearer {token or self.fake.channel_token()}"
        body = doc if isinstance(doc, bytes) else __import__("json").dumps(doc).encode()
        return await self.client.post(
            path,
            data=body,
            headers={"Authorization": authorization, "Content-Type": "application/json"},
        )

    async def customer_says(self, text: str, *, event_id: str) -> Receipt:
        resp = await self.post(activity(self.fake, text=text, event_id=event_id))
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        return Receipt(body["event_id"], body["session_key"], body["duplicate"])

    async def next_posted(
        self, conversation_id: str = PERSONAL_CONV, timeout_s: float = 5.0
    ) -> Posted:
        """The next message (not typing) posted into ``conversation_id``."""
        index, posted = await self.fake.wait_for(
            lambda p: p.type == "message" and p.conversation_id == conversation_id,
            after=self._cursor,
            timeout_s=timeout_s,
        )
        self._cursor = index + 1
        return posted

    async def next_delivery(self, timeout_s: float = 5.0) -> Delivery:
        return delivery_of(await self.next_posted(timeout_s=timeout_s))

    async def offered_actions(self, reply_to: str | None, timeout_s: float = 2.0) -> list[str]:
        """Buttons of every card posted in reply to ``reply_to`` (waits for one with buttons)."""
        await self.fake.wait_for(
            lambda p: p.reply_to == reply_to and bool(actions_of(p)), timeout_s=timeout_s
        )
        return [a for p in self.fake.posted if p.reply_to == reply_to for a in actions_of(p)]
