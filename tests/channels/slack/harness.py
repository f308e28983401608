"""Signed Slack requests, payload builders and the contract harness for the Slack channel."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.envelope import Citation, SessionKey
from channels.slack.plugin import SlackChannel
from channels.slack.translate import slack_session_key
from channels.slack.verify import sign_request
from tests.channels.support import Delivery, Receipt
from tests.fakes.slack_api import ApiCall, FakeSlackApi

if TYPE_CHECKING:
    from bot.hub import Hub

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T111"
BOT_TOKEN = "xoxb-T111-test"
BOT_USER = "UBOT"
BOT_ID = "BBOT"
CUSTOMER = "UCUST"
DM_CHANNEL = "DCUST"
SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "payloads" / "slack"

Client = TestClient[web.Request, web.Application]
_ts = itertools.count(1)


def shared_payloads() -> list[Path]:
    """Every recorded Slack payload body in ../shared (not the signing fixtures)."""
    return sorted(
        p
        for p in SHARED.rglob("*")
        if p.is_file() and p.suffix in (".json", ".txt") and p.parent.name != "signing"
    )


def next_ts() -> str:
    return f"{int(time.time())}.{next(_ts):06d}"


def event_callback(event: dict[str, Any], *, event_id: str, team: str = TEAM) -> dict[str, Any]:
    return {
        "token": "unused",
        "team_id": team,
        "api_app_id": "A111",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": team, "user_id": BOT_USER, "is_bot": True, "enterprise_id": None}
        ],
    }


def dm(
    text: str, *, user: str = CUSTOMER, channel: str = DM_CHANNEL, **extra: Any
) -> dict[str, Any]:
    ts = next_ts()
    return {
        "type": "message",
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel": channel,
        "team": TEAM,
        **extra,
    }


def mention(text: str, *, user: str, channel: str, thread_ts: str | None = None) -> dict[str, Any]:
    ts = next_ts()
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "event_ts": ts,
        "channel": channel,
        "team": TEAM,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def channel_message(
    text: str, *, user: str, channel: str, thread_ts: str | None = None
) -> dict[str, Any]:
    ts = next_ts()
    event = {
        "type": "message",
        "channel_type": "channel",
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel": channel,
        "team": TEAM,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def block_action(
    action_id: str,
    *,
    user: str,
    channel: str,
    message_ts: str,
    value: str = "",
    thread_ts: str | None = None,
) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "api_app_id": "A111",
        "team": {"id": TEAM, "domain": "example"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "channel": {"id": channel, "name": "directmessage" if channel.startswith("D") else "c"},
        "message": {"ts": message_ts, **({"thread_ts": thread_ts} if thread_ts else {})},
        "trigger_id": f"{next_ts()}.trigger",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "switchboard.actions",
                "text": {"type": "plain_text", "text": action_id},
                "value": value,
                "type": "button",
                "action_ts": next_ts(),
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


async def post_signed(
    client: Client,
    body: bytes | dict[str, Any],
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    signed = sign_request(secret, data, int(time.time()) if timestamp is None else timestamp)
    content_type = (
        "application/json" if data.startswith(b"{") else "application/x-www-form-urlencoded"
    )
    resp = await client.post(
        "/slack/events",
        data=data,
        headers={**signed, "Content-Type": content_type, **(headers or {})},
    )
    return resp.status, await resp.text()


def slack_settings(api: FakeSlackApi, **extra: Any) -> dict[str, Any]:
    return {
        "slack_signing_secret": SECRET,
        "slack_bot_token": BOT_TOKEN,
        "slack_api_url": api.api_url,
        **extra,
    }


class SlackHarness:
    """Drives the Slack channel as a customer in a DM: signed Events API requests in, and what
    reached the fake Slack Web API out."""

    name = "slack"
    plugin_cls = SlackChannel

    def __init__(self, hub: Hub, client: Client, api: FakeSlackApi) -> None:
        self.hub = hub
        self.client = client
        self.api = api
        self.session_key: SessionKey = slack_session_key(
            TEAM, channel=DM_CHANNEL, user=CUSTOMER, is_direct=True, thread_ts=None
        )
        self._seen = 0
        self._actions: dict[str | None, list[str]] = {}

    async def customer_says(self, text: str, *, event_id: str) -> Receipt:
        before = await self.hub.store.messages(self.session_key)
        duplicate = any(m.event_id == event_id for m in before)
        status, body = await post_signed(self.client, event_callback(dm(text), event_id=event_id))
        assert status == 200, body
        return Receipt(event_id, str(self.session_key), duplicate)

    async def next_delivery(self, timeout_s: float = 5.0) -> Delivery:
        parts: list[ApiCall] = []
        while True:
            calls = await self.api.wait_for(
                "chat.postMessage", channel=DM_CHANNEL, count=self._seen + 1, timeout_s=timeout_s
            )
            call = calls[self._seen]
            self._seen += 1
            parts.append(call)
            meta = call.metadata.get("event_payload", {})
            if meta.get("part", 0) >= meta.get("parts", 1) - 1:
                break
        meta = parts[-1].metadata["event_payload"]
        self._actions[meta.get("reply_to")] = parts[-1].button_ids
        return Delivery(
            "\n".join(p.section_text for p in parts),
            [Citation(**c) for c in meta.get("citations", [])],
            meta["kind"],
            meta.get("reply_to"),
        )

    async def offered_actions(self, reply_to: str | None, timeout_s: float = 2.0) -> list[str]:
        return self._actions.get(reply_to, [])

    async def close(self) -> None:
        await asyncio.sleep(0)
