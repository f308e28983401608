"""The Telegram channel end to end: webhook in, real PTB client out to a fake Bot API."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from bot.agent import AgentReply
from bot.auth import add_agent
from bot.envelope import SessionKey
from bot.store.base import Role, SessionMode
from channels.memory.pytest_plugin import ScriptedAgent
from channels.telegram.plugin import TelegramChannel
from channels.telegram.render import MAX_MESSAGE_CHARS, utf16_len
from tests.channels.telegram.conftest import MakeHarness
from tests.channels.telegram.harness import (
    BOT_NAME,
    CUSTOMER_ID,
    SECRET,
    TelegramHarness,
    html_to_text,
    private_chat,
    user,
)
from tests.channels.telegram.test_render import check
from tests.fakes.telegram_api import FakeTelegramAPI

DM = SessionKey(f"telegram:{BOT_NAME}:dm:{CUSTOMER_ID}")
GROUP_ID = -4001
SUPERGROUP_ID = -1004001


def message(
    update_id: int,
    text: str | None = "hello",
    *,
    chat: dict[str, Any] | None = None,
    message_id: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "message_id": message_id or update_id + 10_000,
        "from": user(),
        "chat": chat or private_chat(),
        "date": int(time.time()),
    }
    if text is not None:
        msg["text"] = text
    msg.update(extra)
    return {"update_id": update_id, "message": msg}


def group(chat_id: int = GROUP_ID, kind: str = "group") -> dict[str, Any]:
    return {"id": chat_id, "type": kind, "title": "Acme users"}


def mention(text: str) -> dict[str, Any]:
    return {
        "text": f"@acme_bot {text}",
        "entities": [{"type": "mention", "offset": 0, "length": 9}],
    }


async def customer_messages(h: TelegramHarness, key: SessionKey = DM) -> list[str]:
    return [m.text for m in await h.hub.store.messages(key) if m.role == Role.CUSTOMER]


# --- rejected requests ---------------------------------------------------------------------------
@pytest.mark.parametrize("secret", [None, "wrong-secret", SECRET + "x", ""])
async def test_bad_or_missing_secret_is_401_and_stores_nothing(
    harness: TelegramHarness, secret: str | None
) -> None:
    resp = await harness.post_update(message(1), secret=secret)
    assert resp.status == 401
    assert await harness.hub.store.conversation(DM) is None


async def test_unknown_bot_name_is_404(harness: TelegramHarness) -> None:
    resp = await harness.client.post(
        "/telegram/other_bot", json=message(1), headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert resp.status == 404
    assert await harness.hub.store.conversation(DM) is None


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"message": {"text": "no update id"}}',
        b'{"update_id": 5, "message": {"message_id": 1, "chat": {"id": 777001}}}',
        b'{"update_id": 5, "message": {"message_id": 1, "date": 1, "text": 7, '
        b'"chat": {"id": 777001, "type": "private"}}}',
    ],
)
async def test_malformed_update_is_400_and_stores_nothing(
    harness: TelegramHarness, body: bytes
) -> None:
    resp = await harness.client.post(
        harness.webhook_path,
        data=body,
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
    )
    assert resp.status == 400, await resp.text()
    assert "error" in await resp.json()
    assert await harness.hub.store.conversation(DM) is None


async def test_25_mb_body_is_413_and_stores_nothing(harness: TelegramHarness) -> None:
    update = message(1, "x" * (25 * 1024 * 1024))
    resp = await harness.client.post(
        harness.webhook_path,
        data=json.dumps(update).encode(),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert await harness.hub.store.conversation(DM) is None


# --- inbound ------------------------------------------------------------------------------------
async def test_repeated_update_id_is_answered_once(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI
) -> None:
    for _ in range(3):
        assert (await harness.post_update(message(7, "where is my order?"))).status == 200
    await telegram_api.wait_for("sendMessage", chat_id=CUSTOMER_ID)
    await asyncio.sleep(0.3)
    assert len(telegram_api.calls_of("sendMessage")) == 1
    assert await customer_messages(harness) == ["where is my order?"]
    sent = telegram_api.calls_of("sendMessage")[0].params
    assert sent["parse_mode"] == "HTML"
    assert sent["reply_parameters"]["message_id"] == 10_007  # replies to the customer's message


async def test_media_group_is_one_turn(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI, scripted_agent: ScriptedAgent
) -> None:
    def part(i: int) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "media_group_id": "album-1",
            "photo": [
                {
                    "file_id": f"ph{i}",
                    "file_unique_id": f"u{i}",
                    "width": 800,
                    "height": 600,
                    "file_size": 1000 + i,
                }
            ],
        }
        if i == 0:
            extra["caption"] = "my broken screen"
        return message(20 + i, None, **extra)

    channel = harness.hub.channels["telegram"]
    assert isinstance(channel, TelegramChannel)
    channel.media_group_window_s = 0.2
    statuses = await asyncio.gather(*(harness.post_update(part(i)) for i in range(3)))
    assert [r.status for r in statuses] == [200, 200, 200]
    await telegram_api.wait_for("sendMessage", chat_id=CUSTOMER_ID)
    stored = [m for m in await harness.hub.store.messages(DM) if m.role == Role.CUSTOMER]
    assert [m.event_id for m in stored] == ["20"]
    [turn] = scripted_agent.turns
    [inbound] = turn.messages
    assert inbound.text == "my broken screen"
    assert [a.ref for a in inbound.attachments] == [
        "telegram-file:ph0",
        "telegram-file:ph1",
        "telegram-file:ph2",
    ]
    # A part redelivered by Telegram is not a new message.
    assert (await harness.post_update(part(2))).status == 200
    await asyncio.sleep(0.3)
    assert len(scripted_agent.turns) == 1


async def test_forum_topic_session_and_reply_in_topic(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI
) -> None:
    update = message(
        30,
        chat=group(SUPERGROUP_ID, "supergroup") | {"is_forum": True},
        message_thread_id=88,
        is_topic_message=True,
        **mention("my invoice is wrong"),
    )
    assert (await harness.post_update(update)).status == 200
    [call] = await telegram_api.wait_for("sendMessage", chat_id=SUPERGROUP_ID)
    assert call.params["message_thread_id"] == 88
    assert html_to_text(call.params["text"]).startswith("Echo: my invoice is wrong")
    key = SessionKey(f"telegram:{BOT_NAME}:{SUPERGROUP_ID}:topic:88")
    assert await customer_messages(harness, key) == ["my invoice is wrong"]


async def test_group_messages_without_mention_are_not_stored(harness: TelegramHarness) -> None:
    resp = await harness.post_update(message(40, "just chatting", chat=group()))
    assert resp.status == 200
    key = SessionKey(f"telegram:{BOT_NAME}:{GROUP_ID}")
    assert await harness.hub.store.conversation(key) is None


async def test_group_mode_all_answers_every_message(
    make_harness: MakeHarness, telegram_api: FakeTelegramAPI
) -> None:
    h = await make_harness(telegram_group_mode="all")
    assert (await h.post_update(message(41, "anyone there?", chat=group()))).status == 200
    await telegram_api.wait_for("sendMessage", chat_id=GROUP_ID)


async def test_edited_message_is_a_new_turn_in_the_same_session(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI
) -> None:
    await harness.post_update(message(50, "my order is 123"))
    await telegram_api.wait_for("sendMessage", chat_id=CUSTOMER_ID)
    edited = message(51, "my order is 124", message_id=10_050, edit_date=int(time.time()))
    edited["edited_message"] = edited.pop("message")
    assert (await harness.post_update(edited)).status == 200
    calls = await telegram_api.wait_for("sendMessage", count=2, chat_id=CUSTOMER_ID)
    assert html_to_text(calls[1].params["text"]).startswith("Echo: my order is 124")
    assert await customer_messages(harness) == ["my order is 123", "my order is 124"]


async def test_callback_query_is_answered_and_escalates(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI
) -> None:
    await harness.post_update(message(60, "hi"))
    [answer] = await telegram_api.wait_for("sendMessage", chat_id=CUSTOMER_ID)
    press = {
        "update_id": 61,
        "callback_query": {
            "id": "cbq-61",
            "from": user(),
            "chat_instance": "-99",
            "data": "handoff.request",
            "message": {
                "message_id": 5000,
                "from": telegram_api._me(),
                "chat": private_chat(),
                "date": int(time.time()),
                "text": html_to_text(answer.params["text"]),
            },
        },
    }
    assert (await harness.post_update(press)).status == 200
    await telegram_api.wait_for("answerCallbackQuery", callback_query_id="cbq-61")
    await telegram_api.wait_for("sendMessage", count=2, chat_id=CUSTOMER_ID)
    conv = await harness.hub.store.conversation(DM)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED


async def test_chat_migration_keeps_the_session(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI
) -> None:
    old_key = SessionKey(f"telegram:{BOT_NAME}:{GROUP_ID}")
    await harness.post_update(message(70, chat=group(), **mention("first question")))
    await telegram_api.wait_for("sendMessage", chat_id=GROUP_ID)
    # Telegram's service messages of the upgrade, in the old and in the new chat.
    upgrade = message(71, None, chat=group(), migrate_to_chat_id=SUPERGROUP_ID)
    assert (await harness.post_update(upgrade)).status == 200
    new_chat = group(SUPERGROUP_ID, "supergroup")
    created = message(72, None, chat=new_chat, migrate_from_chat_id=GROUP_ID)
    assert (await harness.post_update(created)).status == 200
    await harness.post_update(message(73, chat=new_chat, **mention("second question")))
    [call] = await telegram_api.wait_for("sendMessage", chat_id=SUPERGROUP_ID)
    assert "second question" in call.params["text"]
    assert await customer_messages(harness, old_key) == ["first question", "second question"]
    new_key = SessionKey(f"telegram:{BOT_NAME}:{SUPERGROUP_ID}")
    assert await harness.hub.store.conversation(new_key) is None
    conv = await harness.hub.store.conversation(old_key)
    assert conv is not None
    assert conv.meta["telegram_chat_id"] == SUPERGROUP_ID


async def test_chat_migrated_error_on_send_follows_the_new_chat(
    make_harness: MakeHarness, telegram_api: FakeTelegramAPI
) -> None:
    h = await make_harness()
    old_key = SessionKey(f"telegram:{BOT_NAME}:{GROUP_ID}")
    telegram_api.migrated[GROUP_ID] = SUPERGROUP_ID  # the upgrade's update never reached us
    await h.post_update(message(80, chat=group(), **mention("are you there?")))
    [call] = await telegram_api.wait_for("sendMessage", chat_id=SUPERGROUP_ID)
    assert "are you there?" in call.params["text"]
    assert len(telegram_api.calls_of("sendMessage")) == 2  # old id refused, new id delivered
    conv = await h.hub.store.conversation(old_key)
    assert conv is not None
    assert conv.meta["telegram_chat_id"] == SUPERGROUP_ID


# --- outbound -----------------------------------------------------------------------------------
async def test_long_answer_is_split_into_valid_html_parts(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI, scripted_agent: ScriptedAgent
) -> None:
    paragraphs = [f"**Step {i}** " + "do <this> & that " * 40 for i in range(30)]
    scripted_agent.replies.append(AgentReply(text="\n\n".join(paragraphs)))
    await harness.post_update(message(90, "how do I set it up?"))
    await asyncio.sleep(0.5)
    calls = await telegram_api.wait_for("sendMessage", chat_id=CUSTOMER_ID)
    calls = telegram_api.calls_of("sendMessage")
    assert len(calls) >= 3
    texts = [c.params["text"] for c in calls]
    for text in texts:
        assert utf16_len(text) <= MAX_MESSAGE_CHARS
        check(text)
        assert all(p.startswith("<b>Step ") for p in text.split("\n\n"))
    assert sum(t.count("<b>Step ") for t in texts) == 30
    assert "reply_parameters" in calls[0].params
    assert all("reply_parameters" not in c.params for c in calls[1:])


async def test_retry_after_is_honoured(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI
) -> None:
    telegram_api.fail_next("sendMessage", retry_after=1)
    t0 = time.monotonic()
    await harness.post_update(message(100, "hello?"))
    calls = await telegram_api.wait_for("sendMessage", count=2, timeout_s=8.0)
    assert calls[1].at - calls[0].at >= 0.95
    assert time.monotonic() - t0 >= 1.0
    assert calls[0].params["text"] == calls[1].params["text"]
    await asyncio.sleep(0.2)
    assert len(telegram_api.calls_of("sendMessage")) == 2


async def test_escalation_round_trip(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI, scripted_agent: ScriptedAgent
) -> None:
    hub = harness.hub
    await harness.post_update(message(110, "I want to talk to a human"))
    [_notice] = await telegram_api.wait_for("sendMessage", chat_id=CUSTOMER_ID)
    conv = await hub.store.conversation(DM)
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    agent = await add_agent(hub.store, "bob", "correct horse battery", display_name="Bob")
    await hub.handoff.claim(DM, agent)
    await hub.handoff.reply(DM, agent, "Hi, this is **Bob**. Let me check <that>.")
    calls = await telegram_api.wait_for("sendMessage", count=3, chat_id=CUSTOMER_ID)
    reply = calls[-1].params["text"]
    assert reply.startswith("<b>Bob</b>")
    assert "Hi, this is <b>Bob</b>. Let me check &lt;that&gt;." in reply
    turns_before = len(scripted_agent.turns)
    await harness.post_update(message(111, "thanks, that works"))  # the bot stays silent
    await asyncio.sleep(0.3)
    assert len(scripted_agent.turns) == turns_before
    await hub.handoff.resolve(DM, agent)
    n = len(telegram_api.calls_of("sendMessage"))
    await harness.post_update(message(112, "one more question"))
    calls = await telegram_api.wait_for("sendMessage", count=n + 1, chat_id=CUSTOMER_ID)
    assert html_to_text(calls[-1].params["text"]).startswith("Echo: one more question")


# --- lifecycle -----------------------------------------------------------------------------------
async def test_start_registers_the_webhook_with_the_secret(
    make_harness: MakeHarness, telegram_api: FakeTelegramAPI
) -> None:
    await make_harness(public_url="https://hub.example.com/")
    assert telegram_api.webhook == {
        "url": f"https://hub.example.com/telegram/{BOT_NAME}",
        "secret_token": SECRET,
    }
    [call] = telegram_api.calls_of("setWebhook")
    assert call.params["allowed_updates"] == ["message", "edited_message", "callback_query"]


async def test_long_polling_confirms_after_ingest(
    make_harness: MakeHarness, telegram_api: FakeTelegramAPI
) -> None:
    h = await make_harness(telegram_polling=True)
    assert telegram_api.calls_of("deleteWebhook")
    await telegram_api.push_update(message(120, "polled hello"))
    [call] = await telegram_api.wait_for("sendMessage", chat_id=CUSTOMER_ID)
    assert html_to_text(call.params["text"]).startswith("Echo: polled hello")
    await telegram_api.wait_for("getUpdates", offset=121)
    assert await customer_messages(h) == ["polled hello"]


async def test_attachment_content_is_fetched_on_demand(
    harness: TelegramHarness, telegram_api: FakeTelegramAPI, scripted_agent: ScriptedAgent
) -> None:
    telegram_api.files["doc-1"] = b"%PDF-1.7 invoice"
    doc = {
        "file_id": "doc-1",
        "file_unique_id": "u-doc-1",
        "file_name": "invoice.pdf",
        "mime_type": "application/pdf",
        "file_size": 16,
    }
    await harness.post_update(message(130, None, document=doc, caption="see attached"))
    await telegram_api.wait_for("sendMessage", chat_id=CUSTOMER_ID)
    assert not telegram_api.calls_of("getFile")  # nothing fetched until asked
    [att] = scripted_agent.turns[0].messages[0].attachments
    channel = harness.hub.channels["telegram"]
    assert isinstance(channel, TelegramChannel)
    assert await channel.fetch_attachment(att) == b"%PDF-1.7 invoice"
