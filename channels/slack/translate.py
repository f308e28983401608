"""Pure translation of Slack payloads into envelopes.

Wire formats:

- Events API: a JSON body, ``{"type": "event_callback", "event_id", "team_id", "event": {...},
  "authorizations": [...]}`` or ``{"type": "url_verification", "challenge"}``
  (https://docs.slack.dev/apis/events-api/).
- Interactivity: ``application/x-www-form-urlencoded`` with one field ``payload`` holding JSON
  such as ``{"type": "block_actions", "actions": [...]}``
  (https://docs.slack.dev/interactivity/handling-user-interaction/).
- Slash commands: ``application/x-www-form-urlencoded`` fields.
- Socket Mode delivers the same JSON inside an envelope's ``payload``.

Session keys (ARCHITECTURE.md): a direct message is ``slack:{team}:dm:{user}``; a channel
conversation lives in its thread, ``slack:{team}:{channel}:thread:{thread_ts or ts}``, so two
people who mention the bot in one channel get two sessions. The event id is Slack's
``event_id`` for events and ``action:{trigger_id}`` for button presses.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from bot.channel import Ignored, Parsed, ParseResult
from bot.config import Settings
from bot.envelope import (
    Attachment,
    InboundMessage,
    Participant,
    SessionKey,
    session_key,
    utcnow,
)
from bot.errors import PayloadInvalid
from bot.payload import rejects_malformed

CHANNEL = "slack"
DESK_ACTION_PREFIX = "switchboard.desk."
"""Action ids of the agents' channel buttons (claim/resolve); never customer messages."""

HANDLED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message"})
"""Message subtypes that carry a person's new message; every other subtype is noise
(``message_changed``, ``message_deleted``, ``channel_join``, ``bot_message``...)."""

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_CHANNEL_REF = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL = re.compile(r"<!([a-z]+)(?:\^[^|>]*)?(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto|tel):[^|>]+)(?:\|([^>]*))?>")


def decode_body(data: bytes) -> dict[str, Any]:
    """Decode a Slack request body: JSON, or a form with a ``payload`` field, or a form.

    Args:
        data: the raw body (UTF-8).

    Returns:
        The payload as a JSON object.

    Raises:
        PayloadInvalid: not UTF-8, malformed JSON, or not a JSON object.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PayloadInvalid("the body is not UTF-8 text") from None
    stripped = text.strip()
    if not stripped:
        raise PayloadInvalid("the body is empty")
    try:
        if stripped.startswith(("{", "[")) or stripped in ("null", "true", "false"):
            value: Any = json.loads(stripped)
        elif stripped[0].isdigit() or stripped.startswith(('"', "-")):
            value = json.loads(stripped)
        else:
            form = dict(parse_qsl(stripped, keep_blank_values=True))
            if not form:
                raise PayloadInvalid("the body is neither JSON nor a form")
            value = json.loads(form["payload"]) if "payload" in form else form
    except json.JSONDecodeError as exc:
        raise PayloadInvalid(f"malformed JSON: {exc.msg} at {exc.pos}") from None
    if not isinstance(value, dict):
        raise PayloadInvalid("the payload is not a JSON object")
    return value


def slack_to_plain(text: str, *, bot_user_id: str | None = None) -> str:
    """Slack message markup to plain text.

    The bot's own mention is removed; other mentions become ``@U123``, channel references
    ``#name``, links ``label (url)`` (or the bare URL), ``<!here>`` ``@here``; ``&amp;``,
    ``&lt;``, ``&gt;`` are unescaped. Source: https://docs.slack.dev/messaging/formatting-message-text/
    """

    def mention(m: re.Match[str]) -> str:
        return "" if m.group(1) == bot_user_id else f"@{m.group(1)}"

    def channel(m: re.Match[str]) -> str:
        return f"#{m.group(2) or m.group(1)}"

    def special(m: re.Match[str]) -> str:
        return m.group(2) or f"@{m.group(1)}"

    def link(m: re.Match[str]) -> str:
        url, label = m.group(1), m.group(2)
        if label is None or label == url or url.endswith(label):
            return url.removeprefix("mailto:")
        return f"{label} ({url})"

    out = _MENTION.sub(mention, text)
    out = _CHANNEL_REF.sub(channel, out)
    out = _SPECIAL.sub(special, out)
    out = _LINK.sub(link, out)
    out = out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", out).strip()


_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")


def mrkdwn_to_markdown(text: str) -> str:
    """What a person typed in Slack, as CommonMark (for agents' replies from the desk).

    Markup is first made plain (:func:`slack_to_plain`); then Slack's ``*bold*`` becomes
    ``**bold**`` and ``~strike~`` ``~~strike~~``; ``_italic_`` and code are the same in both.
    """
    plain = slack_to_plain(text)
    return _STRIKE.sub(r"~~\1~~", _BOLD.sub(r"**\1**", plain))


def bot_user_ids(payload: dict[str, Any]) -> set[str]:
    """The bot user ids this payload was delivered to.

    Taken from ``authorizations[].user_id`` (bots only) and the older ``authed_users``.
    """
    found = {u for u in payload.get("authed_users") or [] if isinstance(u, str) and u}
    for auth in payload.get("authorizations") or []:
        if isinstance(auth, dict) and auth.get("is_bot") and isinstance(auth.get("user_id"), str):
            found.add(auth["user_id"])
    return found


def _ts_to_datetime(ts: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def team_of(payload: dict[str, Any]) -> str | None:
    """The workspace id of a payload (team id, else the enterprise id of org-wide apps)."""
    event = payload.get("event") if isinstance(payload.get("event"), dict) else {}
    team = payload.get("team")
    user = payload.get("user")
    candidates = [
        payload.get("team_id"),
        team.get("id") if isinstance(team, dict) else None,
        user.get("team_id") if isinstance(user, dict) else None,
        event.get("team") if isinstance(event, dict) else None,
        payload.get("enterprise_id"),
        team.get("enterprise_id") if isinstance(team, dict) else None,
    ]
    return next((c for c in candidates if isinstance(c, str) and c), None)


def enterprise_of(payload: dict[str, Any]) -> str | None:
    """The Enterprise Grid organization id of a payload, when there is one."""
    team = payload.get("team")
    enterprise = payload.get("enterprise")
    candidates = [
        payload.get("enterprise_id"),
        team.get("enterprise_id") if isinstance(team, dict) else None,
        enterprise.get("id") if isinstance(enterprise, dict) else None,
    ]
    return next((c for c in candidates if isinstance(c, str) and c), None)


def slack_session_key(
    team: str, *, channel: str, user: str, is_direct: bool, thread_ts: str | None
) -> SessionKey:
    """The session key of a Slack conversation (see the module docstring)."""
    if is_direct:
        return session_key(CHANNEL, team, dm_peer=user)
    if not thread_ts:
        raise PayloadInvalid("a channel conversation needs a thread or message ts")
    return session_key(CHANNEL, team, chat=channel, thread=thread_ts)


def address_of(key: SessionKey | str) -> tuple[str, str | None, str | None, str | None]:
    """``(team, channel, thread_ts, dm_user)`` of a Slack session key (unescaped)."""
    parts = [p.replace("%3A", ":").replace("%25", "%") for p in str(key).split(":")]
    if len(parts) < 3 or parts[0] != CHANNEL:
        raise ValueError(f"not a Slack session key: {key!r}")
    team = parts[1]
    if parts[2] == "dm" and len(parts) >= 4:
        return team, None, None, parts[3]
    thread = parts[4] if len(parts) >= 5 and parts[3] == "thread" else None
    return team, parts[2], thread, None


def _attachments(event: dict[str, Any]) -> tuple[Attachment, ...]:
    files = event.get("files")
    if not isinstance(files, list):
        return ()
    out: list[Attachment] = []
    for f in files:
        if not isinstance(f, dict) or f.get("mode") == "tombstone":
            continue
        size = f.get("size")
        out.append(
            Attachment(
                name=_str(f.get("name")) or _str(f.get("title")) or _str(f.get("id")) or "file",
                mime_type=_str(f.get("mimetype")) or "application/octet-stream",
                size=size if isinstance(size, int) else None,
                url=_str(f.get("url_private_download")) or _str(f.get("url_private")),
                ref=_str(f.get("id")),
            )
        )
    return tuple(out)


def _parse_event(
    payload: dict[str, Any], settings: Settings, bot_user_id: str | None
) -> ParseResult:
    event = payload.get("event")
    if not isinstance(event, dict):
        raise PayloadInvalid("event_callback without an event object", field="event")
    event_id = _str(payload.get("event_id"))
    if event_id is None:
        raise PayloadInvalid("event_callback without an event_id", field="event_id")
    etype = event.get("type")
    if etype not in ("message", "app_mention"):
        return Ignored(f"event type {etype!r} is not a customer message")
    subtype = event.get("subtype")
    if subtype not in HANDLED_SUBTYPES and not (
        subtype == "bot_message" and settings.slack_allow_bots
    ):
        return Ignored(f"message subtype {subtype!r} is not a new message")
    own = bot_user_ids(payload) | ({bot_user_id} if bot_user_id else set())
    user = _str(event.get("user"))
    if user is not None and user in own:
        return Ignored("the bot's own message")
    if event.get("bot_id") or event.get("bot_profile") or subtype == "bot_message":
        if not settings.slack_allow_bots:
            return Ignored("a message from another bot (slack_allow_bots is off)")
        user = user or _str(event.get("bot_id"))
    if user is None:
        return Ignored("a message without an author")
    team = team_of(payload)
    channel = _str(event.get("channel"))
    ts = _str(event.get("ts"))
    if team is None or channel is None or ts is None:
        raise PayloadInvalid("message event without team, channel or ts", field="event")
    raw_text = _str(event.get("text")) or ""
    channel_type = event.get("channel_type")
    is_direct = channel_type == "im" or (channel_type is None and channel.startswith("D"))
    mentions = set(_MENTION.findall(raw_text))
    mentioned = etype == "app_mention" or bool(mentions & own)
    if etype == "message" and not is_direct and mentions & own:
        return Ignored("a mention of the bot: its app_mention event carries it")
    thread_ts = _str(event.get("thread_ts"))
    if not is_direct and not mentioned and thread_ts is None:
        return Ignored("a channel message outside a thread that does not mention the bot")
    key = slack_session_key(
        team, channel=channel, user=user, is_direct=is_direct, thread_ts=thread_ts or ts
    )
    text = slack_to_plain(raw_text, bot_user_id=bot_user_id or next(iter(mentions & own), None))
    attachments = _attachments(event)
    if not text and not attachments:
        return Ignored("an empty message")
    if not text:
        text = ", ".join(a.name for a in attachments)
    sent = _ts_to_datetime(ts)
    return Parsed(
        InboundMessage(
            event_id=event_id,
            channel=CHANNEL,
            account=team,
            session_key=key,
            sender=Participant(
                id=user,
                name=_str((event.get("user_profile") or {}).get("display_name"))
                or _str((event.get("user_profile") or {}).get("real_name"))
                or _str(event.get("username")),
                verified=True,
            ),
            text=text,
            attachments=attachments,
            reply_to=thread_ts if thread_ts and thread_ts != ts else None,
            thread_id=None if is_direct else thread_ts or ts,
            is_direct=is_direct,
            mentioned=mentioned,
            raw=payload,
            sent_at=sent or utcnow(),
        )
    )


def _parse_block_actions(payload: dict[str, Any]) -> ParseResult:
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise PayloadInvalid("block_actions without actions", field="actions")
    action = actions[0]
    action_id = _str(action.get("action_id"))
    if action_id is None:
        raise PayloadInvalid("an action without action_id", field="actions.0.action_id")
    if action_id.startswith(DESK_ACTION_PREFIX):
        return Ignored("an agents' channel button (handled by the desk)")
    user_obj = _obj(payload.get("user"))
    user = _str(user_obj.get("id"))
    team = team_of(payload)
    container = _obj(payload.get("container"))
    message = _obj(payload.get("message"))
    channel_obj = _obj(payload.get("channel"))
    channel = _str(container.get("channel_id")) or _str(channel_obj.get("id"))
    if user is None or team is None or channel is None:
        return Ignored("a button press outside a conversation (no user, team or channel)")
    is_direct = channel.startswith("D") or channel_obj.get("name") == "directmessage"
    thread_ts = (
        _str(container.get("thread_ts"))
        or _str(message.get("thread_ts"))
        or _str(container.get("message_ts"))
    )
    if not is_direct and thread_ts is None:
        return Ignored("a button press outside a message")
    trigger = _str(payload.get("trigger_id")) or _str(action.get("action_ts"))
    if trigger is None:
        raise PayloadInvalid("block_actions without trigger_id or action_ts", field="trigger_id")
    label_obj = _obj(action.get("text"))
    label = _str(label_obj.get("text")) or action_id
    sent = _ts_to_datetime(action.get("action_ts"))
    return Parsed(
        InboundMessage(
            event_id=f"action:{trigger}",
            channel=CHANNEL,
            account=team,
            session_key=slack_session_key(
                team, channel=channel, user=user, is_direct=is_direct, thread_ts=thread_ts
            ),
            sender=Participant(
                id=user,
                name=_str(user_obj.get("name")) or _str(user_obj.get("username")),
                verified=True,
            ),
            text=label,
            thread_id=None if is_direct else thread_ts,
            is_direct=is_direct,
            mentioned=True,
            action=action_id,
            raw=payload,
            sent_at=sent or utcnow(),
        )
    )


@rejects_malformed("slack")
def parse_payload(
    payload: dict[str, Any], settings: Settings, *, bot_user_id: str | None = None
) -> ParseResult:
    """Turn a verified Slack payload into an envelope, or say why it is ignored.

    Customer messages are direct messages, ``app_mention`` events and replies in channel
    threads (:class:`~bot.envelope.InboundMessage` with ``mentioned=False``: the plugin keeps
    them only for threads that already are sessions); ``block_actions`` become envelopes with
    ``action`` set. Everything else (url_verification, edits, deletions, joins, reactions,
    views, shortcuts, slash commands, workflow steps, own and other bots' messages) is
    :class:`~bot.channel.Ignored` with a reason.

    Args:
        payload: the decoded body (:func:`decode_body`) or a Socket Mode envelope's payload.
        settings: for ``slack_allow_bots``.
        bot_user_id: the bot's user id when known (from authorization), else taken from the
            payload's ``authorizations``.

    Raises:
        PayloadInvalid: the payload is malformed (missing ids of a kind it claims to be).
    """
    ptype = payload.get("type")
    if ptype == "event_callback":
        return _parse_event(payload, settings, bot_user_id)
    if ptype == "block_actions":
        return _parse_block_actions(payload)
    if ptype == "url_verification":
        return Ignored("url_verification handshake (answered with the challenge)")
    if ptype == "app_rate_limited":
        return Ignored("app_rate_limited notice from Slack")
    if isinstance(ptype, str) and ptype:
        return Ignored(f"payload type {ptype!r} is not a customer message")
    if "command" in payload:
        return Ignored(f"slash command {payload.get('command')!r} is not handled")
    raise PayloadInvalid("not a Slack payload (no type)", field="type")
