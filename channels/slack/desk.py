"""Human agents working from Slack: the agents' channel (``slack_agents_channel``).

Every escalated conversation, from any channel, appears in the agents' channel as one message
with **Claim** and **Resolve** buttons; its thread mirrors the conversation (customer messages,
bot and console replies, mode changes, SLA breaches). An agent's reply in that thread goes to
the customer on the customer's own channel through ``hub.handoff.reply`` (replying to a queued
conversation claims it first). The buttons call ``hub.handoff.claim`` / ``hub.handoff.resolve``.

Agent accounts: a Slack user acting here is the agent ``slack.{team}.{user}``; the account is
created on first use with the Slack display name (``users.info``) and a random password it
never learns (an administrator may set one to let the same person use the web console).

``slack_agents_channel`` is a channel id (``C0123``), or ``T0123:C0123`` to name the workspace
whose bot token posts there (default: the configured single token). The bot must be a member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bot.auth import hash_password
from bot.envelope import SessionKey
from bot.errors import Conflict, Forbidden, NotFound, SwitchboardError
from bot.events import HubEvent
from bot.handoff import Handoff
from bot.store.base import AgentAccount, Conversation, Role, SessionMode
from channels.slack.render import escape, to_mrkdwn
from channels.slack.translate import DESK_ACTION_PREFIX, mrkdwn_to_markdown, team_of
from channels.slack.web_api import SlackWebApi

if TYPE_CHECKING:
    from bot.channel import HubAPI

log = logging.getLogger(__name__)

CLAIM = DESK_ACTION_PREFIX + "claim"
RESOLVE = DESK_ACTION_PREFIX + "resolve"
META_KEY = "slack_desk"
"""Conversation meta key of the desk thread: ``{"channel", "ts"}``."""
TRANSCRIPT_LINES = 6
"""Recent messages quoted in a new desk thread."""


class _DeskHub(Protocol):
    handoff: Handoff


@dataclass(frozen=True, slots=True)
class DeskThread:
    """The agents' channel thread of one session (``ts`` of its root message)."""

    channel: str
    ts: str


def _label(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


class SlackDesk:
    """The agents' channel of a :class:`~channels.slack.plugin.SlackChannel`.

    Args:
        web: the started Slack channel's Web API (its client and bot tokens).
        hub: the hub (needs ``handoff``, ``store`` and ``events``).
        target: ``slack_agents_channel`` (``C...`` or ``T...:C...``).
    """

    def __init__(self, web: SlackWebApi, hub: HubAPI, target: str) -> None:
        team, sep, channel_id = target.partition(":")
        self.team: str | None = team if sep else None
        self.channel_id = channel_id if sep else target
        self.web = web
        self.hub = hub
        self.threads: dict[SessionKey, DeskThread] = {}
        self.sessions_by_ts: dict[str, SessionKey] = {}
        self._pending_replies: deque[tuple[SessionKey, str]] = deque(maxlen=1000)
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()

    @property
    def handoff(self) -> Handoff:
        """The hub's handoff (human queue and agents' actions)."""
        hub: Any = self.hub
        handoff: Handoff = hub.handoff
        return handoff

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Rebuild the thread map from stored meta and follow the hub's events."""
        for conv in await self.hub.store.conversations(
            modes=[SessionMode.QUEUED, SessionMode.HUMAN], limit=10_000
        ):
            self._adopt(conv)
        self._task = asyncio.create_task(self._follow(), name="slack-desk")
        await asyncio.wait_for(self._ready.wait(), 5.0)

    async def stop(self) -> None:
        """Stop following events; let running button/reply jobs finish (bounded)."""
        if self._jobs:
            await asyncio.wait(self._jobs, timeout=5.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _adopt(self, conv: Conversation) -> DeskThread | None:
        stored = conv.meta.get(META_KEY)
        if not isinstance(stored, dict):
            return None
        thread = DeskThread(channel=str(stored["channel"]), ts=str(stored["ts"]))
        self.threads[conv.session_key] = thread
        self.sessions_by_ts[thread.ts] = conv.session_key
        return thread

    # --- Slack → hub ----------------------------------------------------------------------------
    def owns(self, payload: dict[str, Any]) -> bool:
        """True for the desk's buttons and for messages in the agents' channel."""
        if payload.get("type") == "block_actions":
            actions = payload.get("actions") or []
            return bool(actions) and str(actions[0].get("action_id", "")).startswith(
                DESK_ACTION_PREFIX
            )
        event = payload.get("event")
        return (
            payload.get("type") == "event_callback"
            and isinstance(event, dict)
            and event.get("channel") == self.channel_id
        )

    def handle(self, payload: dict[str, Any], context: Any) -> None:
        """Run a desk payload after the ack (a background job; errors are logged)."""
        job = asyncio.create_task(self._handle(payload))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _handle(self, payload: dict[str, Any]) -> None:
        try:
            if payload.get("type") == "block_actions":
                await self._button(payload)
            else:
                await self._thread_message(payload)
        except Exception:  # a job's boundary: log, never kill the server
            log.exception("slack.desk_failed", extra={"channel": "slack"})

    async def _button(self, payload: dict[str, Any]) -> None:
        action = payload["actions"][0]
        key = SessionKey(str(action.get("value", "")))
        user = (payload.get("user") or {}).get("id")
        team = team_of(payload)
        if not user or not team or key not in self.threads:
            return
        agent = await self.agent_for(team, user)
        try:
            if action["action_id"] == CLAIM:
                await self.handoff.claim(key, agent)
            elif action["action_id"] == RESOLVE:
                await self.handoff.resolve(key, agent)
        except (Conflict, Forbidden, NotFound) as exc:
            await self._post_thread(key, f":warning: <@{user}>: {escape(str(exc))}")

    async def _thread_message(self, payload: dict[str, Any]) -> None:
        event = payload["event"]
        thread_ts = event.get("thread_ts")
        if (
            event.get("type") != "message"
            or event.get("subtype") not in (None, "file_share")
            or event.get("bot_id")
            or not thread_ts
            or thread_ts == event.get("ts")
        ):
            return
        key = self.sessions_by_ts.get(str(thread_ts))
        user = event.get("user")
        team = team_of(payload)
        text = mrkdwn_to_markdown(str(event.get("text") or ""))
        if key is None or not user or not team or not text:
            return
        agent = await self.agent_for(team, str(user))
        try:
            conv = await self.hub.store.conversation(key)
            if conv is not None and conv.mode in (SessionMode.QUEUED, SessionMode.BOT):
                await self.handoff.claim(key, agent)
            self._pending_replies.append((key, text))
            await self.handoff.reply(key, agent, text)
        except (Conflict, Forbidden, NotFound) as exc:
            await self._post_thread(
                key, f":warning: <@{user}>: not sent to the customer: {escape(str(exc))}"
            )

    async def agent_for(self, team: str, user: str) -> AgentAccount:
        """The agent account of a Slack user, created on first use (see the module docstring)."""
        name = f"slack.{team}.{user}"[:64]
        store = self.hub.store
        account = await store.agent(name)
        if account is not None:
            return account
        display = user
        try:
            info = await self._api("users.info", user=user)
            profile = info.get("user", {}).get("profile", {})
            display = (
                profile.get("display_name")
                or profile.get("real_name")
                or info.get("user", {}).get("real_name")
                or user
            )
        except SwitchboardError:
            log.warning("slack.desk_user_lookup_failed", extra={"user": user})
        password_hash = await asyncio.to_thread(hash_password, secrets.token_urlsafe(32))
        account = AgentAccount(name=name, display_name=display, password_hash=password_hash)
        try:
            await store.create_agent(account)
        except Conflict:
            existing = await store.agent(name)
            if existing is not None:
                return existing
        log.info("slack.desk_agent_created", extra={"agent": name})
        return account

    # --- hub → Slack ----------------------------------------------------------------------------
    async def _follow(self) -> None:
        async with self.hub.events.subscribe() as sub:
            self._ready.set()
            async for event in sub:
                try:
                    await self._on_event(event)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one event's boundary
                    log.exception(
                        "slack.desk_event_failed",
                        extra={"session_key": event.session_key, "channel": "slack"},
                    )

    async def _on_event(self, event: HubEvent) -> None:
        key = event.session_key
        if event.type == "mode":
            mode = event.data.get("mode")
            if mode == SessionMode.QUEUED.value:
                await self._queued(key, event.data)
            elif key in self.threads:
                await self._mode_changed(key, str(mode), event.data.get("agent"))
        elif event.type == "message" and key in self.threads and event.seq is not None:
            await self._mirror(key, event.seq)
        elif event.type == "sla":
            await self._sla_breached(key, event.data)

    async def _sla_breached(self, key: SessionKey, data: dict[str, Any]) -> None:
        """An SLA breach (``bot.sla``): said in the session's thread, else in the channel."""
        what = "first response" if data.get("kind") == "first_response" else "resolution"
        text = (
            f":rotating_light: SLA breached: the {what} was due {escape(str(data.get('due')))}"
            f" (policy {escape(str(data.get('policy')))},"
            f" priority {escape(str(data.get('priority')))})."
        )
        if key in self.threads:
            await self._post_thread(key, text)
        else:
            await self._api("chat.postMessage", channel=self.channel_id, text=text)

    async def _queued(self, key: SessionKey, data: dict[str, Any]) -> None:
        conv = await self.hub.store.conversation(key)
        if conv is None:
            return
        thread = self.threads.get(key) or self._adopt(conv)
        text, blocks = await self._root(conv, data)
        if thread is None:
            answer = await self._api(
                "chat.postMessage", channel=self.channel_id, text=text, blocks=blocks
            )
            thread = DeskThread(
                channel=str(answer.get("channel") or self.channel_id), ts=str(answer["ts"])
            )
            self.threads[key] = thread
            self.sessions_by_ts[thread.ts] = key
            await self.hub.store.set_meta(
                key, META_KEY, {"channel": thread.channel, "ts": thread.ts}
            )
        else:
            await self._api(
                "chat.update", channel=thread.channel, ts=thread.ts, text=text, blocks=blocks
            )
            await self._post_thread(key, ":sos: Waiting for a person again.")

    async def _root(
        self, conv: Conversation, data: dict[str, Any]
    ) -> tuple[str, list[dict[str, Any]]]:
        who = conv.customer.name or conv.customer.id
        reason = data.get("reason") or conv.escalation_reason or "escalated"
        ticket = data.get("ticket_id") or conv.ticket_id
        head = f":sos: *{escape(who)}* on {escape(conv.channel)} needs a person ({escape(reason)})"
        if ticket:
            head += f" · ticket {escape(ticket)}"
        recent = await self.hub.store.messages(conv.session_key, limit=200)
        lines = [
            f"> *{escape(m.role.value)}:* {escape(m.text[:300])}".replace("\n", " ")
            for m in recent[-TRANSCRIPT_LINES:]
            if not m.internal
        ]
        body = head + ("\n" + "\n".join(lines) if lines else "")
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"`{escape(conv.session_key)}` · reply in the thread",
                    }
                ],
            },
            self._buttons(conv.session_key, claim=True),
        ]
        return head, blocks

    @staticmethod
    def _buttons(key: SessionKey, *, claim: bool) -> dict[str, Any]:
        elements: list[dict[str, Any]] = []
        if claim:
            elements.append(
                {
                    "type": "button",
                    "action_id": CLAIM,
                    "style": "primary",
                    "text": _label("Claim"),
                    "value": str(key),
                }
            )
        elements.append(
            {"type": "button", "action_id": RESOLVE, "text": _label("Resolve"), "value": str(key)}
        )
        return {"type": "actions", "block_id": "switchboard.desk", "elements": elements}

    async def _mode_changed(self, key: SessionKey, mode: str, agent: Any) -> None:
        thread = self.threads[key]
        conv = await self.hub.store.conversation(key)
        if conv is None:
            return
        who = conv.customer.name or conv.customer.id
        if mode == SessionMode.HUMAN.value:
            account = await self.hub.store.agent(str(agent)) if agent else None
            name = account.display_name if account is not None else str(agent)
            status = f":raising_hand: *{escape(name)}* is talking to *{escape(who)}*"
            buttons = [self._buttons(key, claim=False)]
        else:
            status = f":white_check_mark: *{escape(who)}*'s conversation is back with the bot"
            if mode == SessionMode.CLOSED.value:
                status = f":lock: *{escape(who)}*'s conversation is closed"
            buttons = []
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": status}}, *buttons]
        await self._api(
            "chat.update", channel=thread.channel, ts=thread.ts, text=status, blocks=blocks
        )
        await self._post_thread(key, status)

    async def _mirror(self, key: SessionKey, seq: int) -> None:
        found = await self.hub.store.messages(
            key, after_seq=seq - 1, limit=1, include_internal=True
        )
        if not found or found[0].seq != seq:
            return
        message = found[0]
        if message.role == Role.AGENT and not message.internal:
            pending = (key, message.text.strip())
            if pending in self._pending_replies:
                self._pending_replies.remove(pending)
                return  # the agent wrote it in this thread already
        if message.role == Role.CUSTOMER:
            conv = await self.hub.store.conversation(key)
            who = (conv.customer.name or conv.customer.id) if conv is not None else "customer"
            label = f":speech_balloon: *{escape(who)}*"
        elif message.internal:
            label = f":memo: note by *{escape(message.author or 'agent')}*"
        elif message.role == Role.AGENT:
            label = f":bust_in_silhouette: *{escape(message.author or 'agent')}*"
        else:
            label = f":robot_face: _{escape(message.role.value)}_"
        await self._post_thread(key, f"{label}: {to_mrkdwn(message.text)}"[:3000])

    async def _post_thread(self, key: SessionKey, text: str) -> None:
        thread = self.threads.get(key)
        if thread is None:
            return
        await self._api(
            "chat.postMessage",
            channel=thread.channel,
            thread_ts=thread.ts,
            text=text,
            unfurl_links=False,
        )

    async def _api(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """Call ``method`` with the desk workspace's bot token; the answer's JSON object."""
        token = await self.web.bot_token(team_id=self.team)
        response = await self.web.call(method, token=token, **kwargs)
        return dict(response.data) if isinstance(response.data, dict) else {}
