"""Telegram JSON to python-telegram-bot objects, with the checks PTB does not make.

``Update.de_json`` checks that fields are present, not their types; :func:`decode_update`
checks the shape the parser relies on first (integer ids and dates, string texts) so a
malformed body is a :class:`~bot.errors.PayloadInvalid` naming the field (HTTP 400), never a
crash later. Payloads recorded with older Bot API versions are filled in (:func:`legacy_fill`).

Wire format: https://core.telegram.org/bots/api#update and
https://core.telegram.org/bots/api#message
"""

from __future__ import annotations

from typing import Any, Final

from telegram import Update

from bot.errors import PayloadInvalid
from bot.payload import rejects_malformed

_UNSUPPORTED_CONTENT = (
    "sticker",
    "dice",
    "game",
    "poll",
    "venue",
    "location",
    "contact",
    "invoice",
    "successful_payment",
    "story",
)


UNSUPPORTED_KEY: Final = "switchboard_unsupported"
"""Where :func:`legacy_fill` leaves the name of content this channel does not handle."""


def legacy_fill(obj: Any) -> Any:
    """Prepare a payload for ``de_json``.

    Fills ``file_unique_id`` (Bot API 4.5+) from ``file_id`` in older recorded payloads, and
    replaces content this channel ignores (stickers, dice, games...) by its name under
    :data:`UNSUPPORTED_KEY`, so that objects recorded with older Bot API versions, which lack
    fields PTB now requires, still parse.
    """
    if isinstance(obj, dict):
        out = {k: legacy_fill(v) for k, v in obj.items() if k not in _UNSUPPORTED_CONTENT}
        dropped = [k for k in _UNSUPPORTED_CONTENT if k in obj and "message_id" in obj]
        if dropped:
            out[UNSUPPORTED_KEY] = dropped[0]
        if "file_id" in out and "file_unique_id" not in out:
            out["file_unique_id"] = out["file_id"]
        return out
    if isinstance(obj, list):
        return [legacy_fill(v) for v in obj]
    return obj


def _expect(cond: bool, message: str, field_name: str) -> None:
    if not cond:
        raise PayloadInvalid(message, field=field_name)


def check_message(msg: Any, where: str) -> None:
    """The shape this parser relies on (``de_json`` checks presence, not types)."""
    _expect(isinstance(msg, dict), f"{where} must be an object", where)
    _expect(isinstance(msg.get("message_id"), int), "message_id must be an integer", where)
    _expect(isinstance(msg.get("date"), int), "date must be a Unix time", f"{where}.date")
    chat = msg.get("chat")
    _expect(isinstance(chat, dict), "chat must be an object", f"{where}.chat")
    _expect(isinstance(chat.get("id"), int), "chat.id must be an integer", f"{where}.chat.id")
    _expect(isinstance(chat.get("type"), str), "chat.type must be a string", f"{where}.chat")
    for name in ("text", "caption", "media_group_id"):
        if name in msg:
            _expect(isinstance(msg[name], str), f"{name} must be a string", f"{where}.{name}")
    if msg.get("from") is not None:
        user = msg["from"]
        _expect(isinstance(user, dict), "from must be an object", f"{where}.from")
        _expect(isinstance(user.get("id"), int), "from.id must be an integer", f"{where}.from")
    if "message_thread_id" in msg:
        _expect(
            isinstance(msg["message_thread_id"], int),
            "message_thread_id must be an integer",
            f"{where}.message_thread_id",
        )


@rejects_malformed("telegram")
def decode_update(doc: Any) -> Update:
    """Validate a decoded JSON ``Update`` and build PTB's object from it.

    Args:
        doc: the decoded JSON body.

    Raises:
        PayloadInvalid: not an object, no integer ``update_id``, or a message/callback whose
            fields are missing or of the wrong type.
    """
    _expect(isinstance(doc, dict), "an Update must be a JSON object", "update")
    _expect(
        isinstance(doc.get("update_id"), int) and not isinstance(doc["update_id"], bool),
        "update_id must be an integer",
        "update_id",
    )
    for name in ("message", "edited_message", "channel_post", "edited_channel_post"):
        if name in doc:
            check_message(doc[name], name)
    if "callback_query" in doc:
        cq = doc["callback_query"]
        _expect(isinstance(cq, dict), "callback_query must be an object", "callback_query")
        _expect(
            isinstance(cq.get("id"), str), "callback_query.id must be a string", "callback_query"
        )
        user = cq.get("from")
        _expect(
            isinstance(user, dict) and isinstance(user.get("id"), int),
            "callback_query.from must be a user",
            "callback_query.from",
        )
        if "data" in cq:
            _expect(isinstance(cq["data"], str), "data must be a string", "callback_query.data")
        if "message" in cq:
            check_message(cq["message"], "callback_query.message")
    try:
        return Update.de_json(legacy_fill(doc), None)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise PayloadInvalid(f"not a valid Telegram Update: {exc}", field="update") from exc


def looks_like_message(doc: Any) -> bool:
    """True for a bare ``Message`` object (a recorded message without its Update wrapper)."""
    return isinstance(doc, dict) and {"message_id", "chat", "date"} <= doc.keys()
