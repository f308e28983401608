"""Where a Teams session's replies go: its Bot Framework ``ConversationReference``.

Every verified activity carries the reference of its conversation (``serviceUrl``, the bot,
the user, the conversation id); :class:`ConversationReferences` keeps it in a bounded cache and
on the conversation (``meta["teams_ref"]``, JSON in camelCase) so any process can send a
proactive reply.

Source: https://learn.microsoft.com/azure/bot-service/bot-builder-howto-proactive-message
"""

from __future__ import annotations

import contextlib
from typing import Any

from botbuilder.core import TurnContext  # type: ignore[import-untyped]
from cachetools import LRUCache

from bot.channel import HubAPI
from bot.envelope import SessionKey
from bot.errors import NotFound
from channels.teams.translate import conversation_kind, thread_root

REF_META_KEY = "teams_ref"
"""Conversation meta key of the stored ``ConversationReference`` (JSON, camelCase)."""
REF_CACHE_SIZE = 10_000


def reference_of(doc: dict[str, Any], activity: Any) -> dict[str, Any]:
    """The activity's ConversationReference as JSON.

    In a channel, the conversation id always names the reply chain
    (``{channel};messageid={root}``), so proactive posts land in the thread.

    Args:
        doc: the activity's JSON.
        activity: the SDK's ``Activity`` of the turn.
    """
    ref: dict[str, Any] = TurnContext.get_conversation_reference(activity).serialize()
    if conversation_kind(doc) == "channel":
        root = thread_root(doc)
        conversation = dict(ref.get("conversation") or {})
        channel_id = str(conversation.get("id", "")).partition(";messageid=")[0]
        if root and channel_id:
            conversation["id"] = f"{channel_id};messageid={root}"
            ref["conversation"] = conversation
    return ref


class ConversationReferences:
    """The sessions' conversation references: cached, and kept in conversation meta.

    Attributes:
        hub: the hub whose store keeps them (None before the channel started: cache only).
    """

    def __init__(self) -> None:
        self.hub: HubAPI | None = None
        self._refs: LRUCache[SessionKey, dict[str, Any]] = LRUCache(maxsize=REF_CACHE_SIZE)

    def note(self, key: SessionKey, ref: dict[str, Any]) -> None:
        """Cache the reference of ``key`` in this process."""
        self._refs[key] = ref

    async def save(self, hub: HubAPI, key: SessionKey, ref: dict[str, Any]) -> None:
        """Store the reference on the conversation (nothing when there is none yet)."""
        with contextlib.suppress(NotFound):  # no conversation yet (e.g. a conversationUpdate)
            await hub.store.set_meta(key, REF_META_KEY, ref)

    async def get(self, key: SessionKey) -> dict[str, Any] | None:
        """The reference of ``key``: cached, else from the conversation's meta, else None."""
        ref = self._refs.get(key)
        if ref is not None:
            return ref
        hub = self.hub
        if hub is None:
            return None
        conv = await hub.store.conversation(key)
        stored = conv.meta.get(REF_META_KEY) if conv is not None else None
        if isinstance(stored, dict):
            self._refs[key] = stored
            return stored
        return None
