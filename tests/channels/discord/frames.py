"""Gateway payloads for the Discord tests, built from the recorded examples of the Discord docs.

The recorded payloads live in ``../shared/datasets/payloads/discord/`` (see its SOURCES.md);
the message and interaction builders start from the docs' "Example Message" and "Example
Interaction" and change only ids, channel, guild, author and content.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from tests.fakes.discord_api import BOT_ID

DATASET = (
    Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "payloads" / "discord"
)
DOCS = DATASET / "discord_api_docs_examples"
TOKEN = base64.b64encode(BOT_ID.encode()).decode().rstrip("=") + ".GkXb1A.fake-secret-part"
"""A bot token whose first segment encodes :data:`BOT_ID` (as Discord's tokens do)."""
SLASH_EXAMPLE = DOCS / "application-commands__Example_Interaction__L500.json"
GUILD = "290926798626357999"
CHANNEL = "290926798999357250"
CUSTOMER = "53908099506183680"
DM_CHANNEL = "1200000000000000001"


def recorded() -> list[tuple[str, bytes]]:
    """Every recorded Discord payload: ``(file name, bytes)``."""
    return [(p.name, p.read_bytes()) for p in sorted(DATASET.rglob("*.json"))]


def docs_example(stem: str) -> dict[str, Any]:
    """One docs example by file-name prefix (e.g. ``message__Example_Message``)."""
    [path] = sorted(DOCS.glob(stem + "__L*.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def message(
    msg_id: str,
    content: str,
    *,
    channel_id: str = CHANNEL,
    guild_id: str | None = None,
    author_id: str = CUSTOMER,
    bot: bool = False,
    mention_bot: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A ``MESSAGE_CREATE`` payload (``d``) based on the docs' "Example Message"."""
    data = docs_example("message__Example_Message")
    data.update(id=msg_id, channel_id=channel_id, content=content)
    data["author"] = {**data["author"], "id": author_id}
    if bot:
        data["author"]["bot"] = True
    if guild_id is not None:
        data["guild_id"] = guild_id
        data["member"] = {"roles": [], "nick": None, "joined_at": data["timestamp"]}
    if mention_bot:
        data["content"] = f"<@{BOT_ID}> {content}"
        data["mentions"] = [
            {
                "id": BOT_ID,
                "username": "switchboard",
                "discriminator": "0",
                "avatar": None,
                "bot": True,
            }
        ]
    data.update(extra)
    return data


def frame(event: str, data: dict[str, Any], seq: int = 1) -> dict[str, Any]:
    """A gateway dispatch frame."""
    return {"op": 0, "t": event, "s": seq, "d": data}


def support_interaction(
    interaction_id: str,
    *,
    question: str | None = None,
    guild_id: str | None = GUILD,
    channel_id: str = CHANNEL,
    channel_type: int = 0,
    parent_id: str | None = None,
    owner_id: str | None = None,
) -> dict[str, Any]:
    """``/support [question]`` based on the docs' slash-command "Example Interaction"."""
    data: dict[str, Any] = json.loads(SLASH_EXAMPLE.read_text())
    data.update(id=interaction_id, channel_id=channel_id, application_id="1100000000000000002")
    data["member"]["user"]["id"] = CUSTOMER
    data["member"]["flags"] = 0  # always sent today; the 2021 docs example predates it
    data["data"] = {"id": "1", "name": "support", "type": 1, "options": []}
    if question is not None:
        data["data"]["options"] = [{"type": 3, "name": "question", "value": question}]
    data["channel"] = {
        "id": channel_id,
        "type": channel_type,
        "guild_id": guild_id,
        "name": "help",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
        "permissions": "2147483647",
    }
    if parent_id is not None:
        data["channel"].update(
            parent_id=parent_id,
            owner_id=owner_id,
            member_count=1,
            message_count=1,
            thread_metadata={
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": "2026-01-01T00:00:00+00:00",
                "locked": False,
            },
        )
    if guild_id is None:
        data.pop("guild_id")
        data["user"] = data.pop("member")["user"]
        data["channel"] = {"id": channel_id, "type": 1, "recipients": [data["user"]]}
    else:
        data["guild_id"] = guild_id
    data["version"] = 1
    data["entitlements"] = []
    data["authorizing_integration_owners"] = {}
    data["context"] = 0 if guild_id else 1
    data["attachment_size_limit"] = 10_485_760
    return data


def button_interaction(
    interaction_id: str,
    custom_id: str,
    *,
    message_id: str,
    channel_id: str,
    guild_id: str | None = None,
    parent_id: str | None = None,
) -> dict[str, Any]:
    """A button press (type 3) on one of our messages, built on the same docs example."""
    data = support_interaction(
        interaction_id,
        guild_id=guild_id,
        channel_id=channel_id,
        channel_type=11 if parent_id else 0,
        parent_id=parent_id,
        owner_id=BOT_ID if parent_id else None,
    )
    data["type"] = 3
    data["data"] = {"custom_id": custom_id, "component_type": 2}
    data["message"] = message(message_id, "", channel_id=channel_id, author_id=BOT_ID, bot=True)
    data["message"]["components"] = [
        {"type": 1, "components": [{"type": 2, "style": 1, "custom_id": custom_id, "label": "x"}]}
    ]
    return data
