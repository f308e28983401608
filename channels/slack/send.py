"""Outbound to Slack: replies (``chat.postMessage``) and streamed answers (``chat.update``).

:meth:`SlackSender.send` renders CommonMark as mrkdwn (:mod:`channels.slack.render`) and posts
into the customer's DM or thread; a 429 becomes :class:`~bot.errors.RateLimited` with Slack's
``Retry-After`` so the hub waits and retries, resuming a split message after the parts already
posted.

Streamed answers (:class:`~bot.channel.StreamingChannel`): :meth:`SlackSender.stream` posts the
partial answer once (``chat.postMessage``) and then edits that message (``chat.update``); the
final :meth:`SlackSender.send` of the same idempotency key edits it into the final answer
(citations and buttons included) and posts only the further parts of a long answer. The
idempotency key → message ``ts`` mapping is kept in a bounded in-process cache and in the
conversation's meta (``slack_stream``: the session's latest streamed answer), so a turn resumed
by another process (a dead worker's lease taken over) edits the same message instead of posting
a second one. Only a process that dies between posting the partial message and writing that
meta leaves an orphan partial message behind. After a 429 on ``chat.update`` partial edits of
the workspace pause for ``Retry-After``; final answers keep the hub's retries.

Sources: https://api.slack.com/methods/chat.postMessage, https://api.slack.com/methods/chat.update,
https://api.slack.com/methods/chat.delete
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.channel import HubAPI
from bot.envelope import OutboundKind, OutboundMessage, SessionKey
from bot.errors import ChannelUnavailable, RateLimited, SwitchboardError
from channels.slack.address import SlackAddress, SlackAddressBook
from channels.slack.render import SlackMessage, build_messages, build_partial
from channels.slack.translate import CHANNEL
from channels.slack.web_api import SlackApiFailed, SlackWebApi

log = logging.getLogger(__name__)

STREAM_META_KEY = "slack_stream"
"""Conversation meta key holding the session's latest streamed answer (:class:`_Streamed`)."""
_MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
"""``chat.update`` errors after which the final answer is posted as a new message."""


@dataclass(slots=True)
class _Streamed:
    """The Slack message of one streamed answer.

    Attributes:
        key: the answer's idempotency key.
        channel: the conversation id Slack answered ``chat.postMessage`` with (``D...`` even
            when the post named a user).
        ts: the message's timestamp (its id).
        final: True once the final answer was sent into it (later partial edits are ignored).
        shown: the partial text last sent (an unchanged rendering is not sent again).
    """

    key: str
    channel: str
    ts: str
    final: bool = False
    shown: str = ""

    def as_meta(self) -> dict[str, Any]:
        return {"key": self.key, "channel": self.channel, "ts": self.ts, "final": self.final}


async def _post(
    web: SlackWebApi, token: str, address: SlackAddress, message: SlackMessage
) -> AsyncSlackResponse:
    """``chat.postMessage`` of one rendered message to the session's channel (and thread).

    Link and media unfurling off.

    Raises:
        As :func:`~channels.slack.web_api.call_api`.
    """
    return await web.call(
        "chat.postMessage",
        token=token,
        channel=address.channel,
        thread_ts=address.thread_ts,
        text=message.text,
        blocks=message.blocks,
        metadata=message.metadata,
        unfurl_links=False,
        unfurl_media=False,
    )


async def _update(
    web: SlackWebApi, token: str, streamed: _Streamed, message: SlackMessage
) -> AsyncSlackResponse:
    """``chat.update`` of a streamed message with a new rendering.

    Raises:
        As :func:`~channels.slack.web_api.call_api`.
    """
    return await web.call(
        "chat.update",
        token=token,
        channel=streamed.channel,
        ts=streamed.ts,
        text=message.text,
        blocks=message.blocks,
        metadata=message.metadata,
    )


class SlackSender:
    """Posts, streams and discards the channel's messages (see the module docstring).

    Args:
        addresses: the sessions' reply addresses.

    Attributes:
        web: the Web API once the channel started (sending before raises ChannelUnavailable).
        hub: the hub whose store keeps streamed answers' messages (``slack_stream`` meta).
    """

    def __init__(self, addresses: SlackAddressBook) -> None:
        self.addresses = addresses
        self.web: SlackWebApi | None = None
        self.hub: HubAPI | None = None
        self._progress: LRUCache[str, int] = LRUCache(10_000)
        self._streams: LRUCache[str, _Streamed] = LRUCache(10_000)
        self._stream_paused_until: dict[str, float] = {}

    def _require_web(self) -> SlackWebApi:
        if self.web is None:
            raise ChannelUnavailable("the Slack channel is not started")
        return self.web

    async def send(self, out: OutboundMessage) -> None:
        """Post a reply into the customer's DM or thread (``chat.postMessage``).

        ``typing`` is not sent (Slack has no typing indicator for bots in conversations). A
        message longer than a section block is posted as several messages; when a part fails
        the hub retries and the parts already posted are not posted again. When the answer was
        streamed (:meth:`stream`, same idempotency key), its first part edits the streamed
        message (``chat.update``) instead of being posted; a streamed message that is gone
        (deleted, too old to edit) is replaced by a new post.

        Raises:
            RateLimited: Slack answered 429 (``retry_after`` from ``Retry-After``).
            ChannelUnavailable: Slack is unreachable or failing (5xx), or not started.
            SlackApiFailed: Slack refused the message (e.g. ``channel_not_found``).
            ConfigError: no bot token for the session's workspace.
        """
        if out.kind == OutboundKind.TYPING:
            return
        web = self._require_web()
        address = await self.addresses.address_of(out.session_key)
        token = await web.bot_token(team_id=address.team, enterprise_id=address.enterprise)
        messages = build_messages(out)
        progress_key = (
            out.idempotency_key or hashlib.sha256(out.model_dump_json().encode()).hexdigest()
        )
        done = self._progress.get(progress_key, 0)
        streamed = None
        if out.idempotency_key and out.kind == OutboundKind.ANSWER:  # only answers are streamed
            streamed = await self._stream_of(out.session_key, out.idempotency_key)
        for i in range(done, len(messages)):
            message = messages[i]
            if i == 0 and streamed is not None:
                edited = await self._finish_stream(web, token, streamed, message, out.session_key)
                await self._save_stream(out.session_key, streamed)  # final: no partial edits
                if edited:
                    self._progress[progress_key] = 1
                    continue
            await _post(web, token, address, message)
            self._progress[progress_key] = i + 1
        log.info(
            "slack.sent",
            extra={
                "channel": CHANNEL,
                "session_key": out.session_key,
                "parts": len(messages),
                "streamed": streamed is not None,
            },
        )

    async def stream(self, out: OutboundMessage) -> None:
        """Show a partial answer: post it once, then edit that message (``chat.update``).

        The message shows the first part of the text so far and a "writing…" note
        (:func:`channels.slack.render.build_partial`). Does nothing once the final answer of
        the key was sent, or when the rendering did not change. After a 429 every partial edit
        of the workspace is refused locally (``RateLimited``) until ``Retry-After`` passed.

        Raises:
            ValueError: ``out.idempotency_key`` is None.
            RateLimited: Slack answered 429, or an earlier 429's wait is not over.
            ChannelUnavailable: Slack is unreachable or failing (5xx).
            SlackApiFailed: Slack refused the call.
            ConfigError: no bot token for the session's workspace.
        """
        key = out.idempotency_key
        if key is None:
            raise ValueError("a streamed message needs an idempotency_key")
        streamed = await self._stream_of(out.session_key, key)
        if streamed is not None and streamed.final:
            return
        message = build_partial(out)
        if streamed is not None and streamed.shown == message.text:
            return
        web = self._require_web()
        address = await self.addresses.address_of(out.session_key)
        paused = self._stream_paused_until.get(address.team, 0.0) - time.monotonic()
        if paused > 0:
            raise RateLimited("Slack partial edits are paused", retry_after=paused)
        token = await web.bot_token(team_id=address.team, enterprise_id=address.enterprise)
        try:
            if streamed is None:
                resp = await _post(web, token, address, message)
                streamed = _Streamed(
                    key=key, channel=str(resp.get("channel") or address.channel), ts=resp["ts"]
                )
                streamed.shown = message.text
                self._streams[key] = streamed
                await self._save_stream(out.session_key, streamed)
            else:
                await _update(web, token, streamed, message)
                streamed.shown = message.text
        except RateLimited as exc:
            self._stream_paused_until[address.team] = time.monotonic() + exc.retry_after
            raise

    async def discard_stream(self, out: OutboundMessage) -> None:
        """Delete the partial message of ``out.idempotency_key`` (``chat.delete``).

        Does nothing when nothing was streamed under the key or its final answer was sent; a
        message already gone counts as deleted.

        Raises:
            RateLimited, ChannelUnavailable, SlackApiFailed: as :meth:`stream`.
        """
        key = out.idempotency_key
        if key is None:
            return
        streamed = await self._stream_of(out.session_key, key)
        if streamed is None or streamed.final:
            return
        web = self._require_web()
        address = await self.addresses.address_of(out.session_key)
        token = await web.bot_token(team_id=address.team, enterprise_id=address.enterprise)
        try:
            await web.call("chat.delete", token=token, channel=streamed.channel, ts=streamed.ts)
        except SlackApiFailed as exc:
            if exc.error != "message_not_found":
                raise
        self._streams.pop(key, None)
        await self._save_stream(out.session_key, None)
        log.info(
            "slack.stream_discarded",
            extra={"channel": CHANNEL, "session_key": out.session_key, "idempotency_key": key},
        )

    async def _finish_stream(
        self,
        web: SlackWebApi,
        token: str,
        streamed: _Streamed,
        message: SlackMessage,
        session_key: SessionKey,
    ) -> bool:
        """Edit a streamed message into the final answer's first part; False when it is gone."""
        streamed.final = True  # from now on partial edits of this key change nothing
        try:
            await _update(web, token, streamed, message)
        except SlackApiFailed as exc:
            if exc.error not in _MESSAGE_GONE:
                raise
            log.warning(
                "slack.stream_gone",
                extra={"channel": CHANNEL, "session_key": session_key, "error": exc.error},
            )
            return False
        return True

    async def _stream_of(self, session_key: SessionKey, key: str) -> _Streamed | None:
        """The streamed message of ``key``: cached, else from the conversation's meta."""
        streamed = self._streams.get(key)
        if streamed is not None or self.hub is None:
            return streamed
        conv = await self.hub.store.conversation(session_key)
        stored = conv.meta.get(STREAM_META_KEY) if conv is not None else None
        if not isinstance(stored, dict) or stored.get("key") != key:
            return None
        try:
            streamed = _Streamed(
                key=key,
                channel=str(stored["channel"]),
                ts=str(stored["ts"]),
                final=bool(stored.get("final")),
            )
        except KeyError:
            return None
        self._streams[key] = streamed
        return streamed

    async def _save_stream(self, session_key: SessionKey, streamed: _Streamed | None) -> None:
        """Store (or, for None, clear) the session's streamed message in its meta."""
        if self.hub is None:
            return
        value = streamed.as_meta() if streamed is not None else None
        try:
            await self.hub.store.set_meta(session_key, STREAM_META_KEY, value)
        except SwitchboardError:
            log.warning("slack.meta_failed", exc_info=True, extra={"session_key": session_key})
