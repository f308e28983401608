"""The pure parser on Telegram's recorded payloads (``../shared/datasets/payloads/telegram``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bot.channel import Ignored, Parsed
from bot.config import Settings
from bot.envelope import InboundMessage
from bot.errors import PayloadInvalid
from channels.telegram.decode import decode_update
from channels.telegram.plugin import TelegramChannel
from channels.telegram.translate import (
    Address,
    Migration,
    ParseContext,
    address_of,
    merge_media_group,
    parse_recorded,
    parse_update,
)

DATASET = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "payloads"
TELEGRAM = DATASET / "telegram"
BOT_ID = 4242
CTX = ParseContext(account="acme_bot", bot_id=BOT_ID, bot_username="acme_bot")


def recorded(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((TELEGRAM / "aiogram_v2_dataset" / name).read_bytes())
    return doc


def as_update(message: dict[str, Any], update_id: int = 900) -> dict[str, Any]:
    return {"update_id": update_id, "message": message}


def in_group(message: dict[str, Any], chat_id: int = -1001234, **extra: Any) -> dict[str, Any]:
    """A recorded message moved into a supergroup."""
    msg = copy.deepcopy(message)
    msg["chat"] = {"id": chat_id, "type": "supergroup", "title": "Acme users"}
    msg.update(extra)
    return msg


def envelope(doc: dict[str, Any], ctx: ParseContext = CTX) -> InboundMessage:
    result = parse_update(decode_update(doc), ctx, doc)
    assert isinstance(result, Parsed), result
    return result.envelope


def test_every_recorded_payload_is_an_envelope_or_ignored() -> None:
    settings = Settings(telegram_bot_name="acme_bot")
    files = sorted(TELEGRAM.rglob("*.json"))
    assert len(files) >= 60
    kinds = {"parsed": 0, "ignored": 0}
    for path in files:
        result = TelegramChannel.parse_payload(
            path.read_bytes(), filename=path.name, settings=settings
        )
        assert isinstance(result, Parsed | Ignored), path.name
        if isinstance(result, Ignored):
            assert result.reason, path.name
            kinds["ignored"] += 1
        else:
            kinds["parsed"] += 1
    assert kinds["parsed"] >= 12, kinds


def test_update_private_text() -> None:
    env = envelope(recorded("UPDATE.json"))
    assert env.event_id == "123456789"
    assert env.session_key == "telegram:acme_bot:dm:12345678"
    assert env.text == "Hi, world!"
    assert env.sender.id == "12345678"
    assert env.sender.name == "FirstName LastName"
    assert env.locale == "ru"
    assert env.is_direct
    assert env.mentioned
    assert env.sent_at.year == 2017


def test_photo_is_the_largest_size_as_a_file_ref() -> None:
    doc = recorded("MESSAGE_WITH_PHOTO.json")
    env = envelope(as_update(doc))
    assert env.text == "photo description"
    [att] = env.attachments
    largest = max(doc["photo"], key=lambda p: p["width"] * p["height"])
    assert att.ref == f"telegram-file:{largest['file_id']}"
    assert att.mime_type == "image/jpeg"
    assert att.url is None  # never a URL with the bot token in it


def test_document_and_voice() -> None:
    doc = envelope(as_update(recorded("MESSAGE_WITH_DOCUMENT.json")))
    [att] = doc.attachments
    raw = recorded("MESSAGE_WITH_DOCUMENT.json")["document"]
    assert (att.name, att.mime_type, att.size) == (
        raw["file_name"],
        raw["mime_type"],
        raw["file_size"],
    )
    assert doc.text == "Read my document"
    voice = envelope(as_update(recorded("MESSAGE_WITH_VOICE.json")))
    assert voice.text == "[voice message]"
    assert voice.attachments[0].mime_type == "audio/ogg"


def test_migration_messages() -> None:
    to = parse_recorded(recorded("MESSAGE_WITH_MIGRATE_TO_CHAT_ID.json"), CTX)
    assert isinstance(to, Migration)
    assert (to.old_chat_id, to.new_chat_id) == (12345678, -1234567890987)
    frm = parse_recorded(recorded("MESSAGE_WITH_MIGRATE_FROM_CHAT_ID.json"), CTX)
    assert isinstance(frm, Migration)
    assert frm.old_chat_id == -123456789


def test_session_follows_a_migrated_chat() -> None:
    msg = in_group(recorded("MESSAGE.json"), chat_id=-100777, text="@acme_bot hello")
    msg["entities"] = [{"type": "mention", "offset": 0, "length": 9}]
    moved = ParseContext(
        account="acme_bot", bot_id=BOT_ID, bot_username="acme_bot", chat_aliases={-100777: -555}
    )
    assert envelope(as_update(msg), moved).session_key == "telegram:acme_bot:-555"
    assert envelope(as_update(msg)).session_key == "telegram:acme_bot:-100777"


def test_group_messages_need_a_mention_or_reply() -> None:
    base = recorded("MESSAGE.json")
    plain = in_group(base)
    result = parse_update(decode_update(as_update(plain)), CTX, {})
    assert isinstance(result, Ignored)
    assert "not addressed" in result.reason
    all_mode = ParseContext(account="acme_bot", bot_id=BOT_ID, group_mode="all")
    assert envelope(as_update(plain), all_mode).session_key == "telegram:acme_bot:-1001234"

    mention = in_group(base, text="@Acme_Bot where is my invoice?")
    mention["entities"] = [{"type": "mention", "offset": 0, "length": 9}]
    env = envelope(as_update(mention))
    assert env.mentioned
    assert not env.is_direct
    assert env.text == "where is my invoice?"

    reply = in_group(base, text="and the second one?")
    answered = in_group(base, message_id=11, text="Here it is")
    answered["from"] = {"id": BOT_ID, "is_bot": True, "first_name": "Acme"}
    reply["reply_to_message"] = answered
    env = envelope(as_update(reply))
    assert env.mentioned
    assert env.reply_to == "11"


def test_forum_topic_gets_its_own_session() -> None:
    msg = in_group(
        recorded("MESSAGE.json"),
        text="@acme_bot help",
        message_thread_id=77,
        is_topic_message=True,
        entities=[{"type": "mention", "offset": 0, "length": 9}],
    )
    # Inside a topic every message "replies" to the topic's first message: not a reply.
    msg["reply_to_message"] = in_group(
        recorded("MESSAGE.json"),
        message_id=77,
        forum_topic_created={"name": "Billing", "icon_color": 1},
    )
    env = envelope(as_update(msg))
    assert env.session_key == "telegram:acme_bot:-1001234:topic:77"
    assert env.thread_id == "77"
    assert env.reply_to is None
    assert address_of(env.session_key) == Address(chat_id=-1001234, thread_id=77)


def test_edited_message_is_a_turn_in_the_same_session() -> None:
    doc = recorded("EDITED_MESSAGE.json")
    env = envelope({"update_id": 901, "edited_message": doc})
    assert env.text == "hi there (edited)"
    assert env.session_key == "telegram:acme_bot:dm:12345678"


def test_album_parts_merge_into_one_envelope() -> None:
    part = recorded("MESSAGE_WITH_MEDIA_GROUP.json")
    second = copy.deepcopy(part) | {"message_id": part["message_id"] + 1, "caption": "both"}
    a = envelope(as_update(part, 10))
    b = envelope(as_update(second, 11))
    merged = merge_media_group([a, b])
    assert merged.event_id == "10"
    assert merged.text == "both"
    assert len(merged.attachments) == 2


def test_callback_query_is_an_action() -> None:
    msg = recorded("MESSAGE.json")
    doc = {
        "update_id": 31,
        "callback_query": {
            "id": "cbq-1",
            "from": msg["from"],
            "chat_instance": "42",
            "data": "handoff.request",
            "message": msg,
        },
    }
    env = envelope(doc)
    assert env.action == "handoff.request"
    assert env.session_key == "telegram:acme_bot:dm:12345678"


@pytest.mark.parametrize(
    "doc",
    [
        {"update_id": "1", "message": {}},
        {"update_id": 1, "message": "hi"},
        {"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": "x"}}},
        {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 1,
                "chat": {"id": 1, "type": "private"},
                "text": 5,
            },
        },
        {"update_id": 1, "callback_query": {"id": 5}},
        {"update_id": True},
    ],
)
def test_malformed_updates_raise_payload_invalid(doc: dict[str, Any]) -> None:
    with pytest.raises(PayloadInvalid):
        decode_update(doc)
