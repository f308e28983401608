"""The CSAT survey: after an agent resolves a conversation, the customer rates it 1..5.

Asking (:meth:`Survey.ask`): the survey is remembered on the conversation (its ``meta`` key
``csat``: the agent and when it was asked) and a notice goes out with five buttons
(``csat.1`` .. ``csat.5``). Channels without buttons show them as text; the notice itself
says "reply with a number", so e-mail and SMS-like channels work too.

Answering (:meth:`Survey.take`, called by the router before the bot sees a turn): a button
press, or a message that is only a rating ("4", "4/5", "5 stars", "4 out of 5"), is stored
(:class:`bot.desk.store.Rating`) and thanked. Any other message ends the survey unanswered and
goes on to the bot as usual. A survey older than ``csat_timeout_s`` is dropped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from bot.config import Settings
from bot.desk.store import DeskStore, Rating
from bot.envelope import Action, InboundMessage, OutboundKind, OutboundMessage, utcnow
from bot.errors import SwitchboardError
from bot.store.base import Conversation, Store, StoredMessage

log = logging.getLogger(__name__)

META_KEY: Final = "csat"
"""The conversation ``meta`` key of a pending survey: ``{"agent", "asked_at"}`` (ISO 8601)."""

ACTION_PREFIX: Final = "csat."
"""Button ids are ``csat.1`` .. ``csat.5``."""

PROMPT: Final = (
    "How satisfied are you with the help you got? Reply with a number from 1 (not at all) "
    "to 5 (very satisfied)."
)
THANKS: Final = "Thank you for your rating!"

RATING_ACTIONS: Final = tuple(
    Action(id=f"{ACTION_PREFIX}{n}", label=label)
    for n, label in ((1, "1 😞"), (2, "2"), (3, "3"), (4, "4"), (5, "5 😀"))
)
"""The five buttons, worst first."""

# "4", "4/5", "4 out of 5", "5 stars", "5 😀" (a button's label copied into an e-mail), "4!".
_RATING_TEXT = re.compile(
    r"^\s*([1-5])\s*(?:/\s*5|out of (?:5|five)|stars?)?[\W_]*$", re.IGNORECASE
)

DeliverFn = Callable[[OutboundMessage], Awaitable[StoredMessage]]


def parse_rating(msg: InboundMessage) -> int | None:
    """The rating a customer message gives, or None when it is not a rating.

    Args:
        msg: a button press (``action`` ``csat.N``) or a text such as ``"4"``, ``"4/5"``,
            ``"5 stars"``, ``"3 out of 5"``.

    Returns:
        1..5, or None.
    """
    if msg.action is not None:
        if msg.action.startswith(ACTION_PREFIX):
            value = msg.action.removeprefix(ACTION_PREFIX)
            if value in {"1", "2", "3", "4", "5"}:
                return int(value)
        return None
    match = _RATING_TEXT.match(msg.text)
    return int(match.group(1)) if match else None


def pending(conv: Conversation, now: datetime, timeout_s: float) -> dict[str, Any] | None:
    """The conversation's open survey (``{"agent", "asked_at"}``), or None."""
    survey = conv.meta.get(META_KEY)
    if not isinstance(survey, dict) or not isinstance(survey.get("asked_at"), str):
        return None
    try:
        asked = datetime.fromisoformat(survey["asked_at"])
    except ValueError:
        return None
    if now - asked > timedelta(seconds=timeout_s):
        return None
    return survey


class Survey:
    """Sends the CSAT survey and takes its answers (see the module docstring).

    Args:
        settings: ``csat_enabled``, ``csat_timeout_s``.
        store: conversations (the pending survey lives in their ``meta``).
        desk: where ratings are stored.
        deliver: the hub's deliver (store, publish, send on the customer's channel).
    """

    def __init__(
        self, settings: Settings, store: Store, desk: DeskStore, deliver: DeliverFn
    ) -> None:
        self.settings = settings
        self.store = store
        self.desk = desk
        self.deliver = deliver

    async def ask(self, conv: Conversation, agent: str | None) -> None:
        """Ask the customer of ``conv`` for a rating of ``agent``'s help.

        Failures are logged, never raised: the conversation is resolved either way.
        """
        if not self.settings.csat_enabled:
            return
        asked_at = utcnow()
        key = conv.session_key
        try:
            await self.store.set_meta(
                key, META_KEY, {"agent": agent, "asked_at": asked_at.isoformat()}
            )
            await self.deliver(
                OutboundMessage(
                    session_key=key,
                    text=PROMPT,
                    kind=OutboundKind.NOTICE,
                    actions=RATING_ACTIONS,
                    idempotency_key=f"csat:{asked_at.isoformat()}",
                )
            )
        except SwitchboardError:
            log.warning("csat.ask_failed", exc_info=True, extra={"session_key": key})
            return
        log.info("csat.asked", extra={"session_key": key, "channel": conv.channel})

    async def take(
        self, conv: Conversation, messages: Sequence[InboundMessage]
    ) -> list[InboundMessage]:
        """Take a survey answer out of a turn's messages.

        Args:
            conv: the conversation (its ``meta`` says whether a survey is open).
            messages: the turn's customer messages, oldest first.

        Returns:
            The messages the bot should still answer (all of them when no survey is open; all
            but the rating when one was given).
        """
        now = utcnow()
        survey = pending(conv, now, self.settings.csat_timeout_s)
        rest: list[InboundMessage] = list(messages)
        rating: int | None = None
        if survey is not None:
            rest = []
            for msg in messages:
                value = parse_rating(msg) if rating is None else None
                if value is None:
                    rest.append(msg)
                else:
                    rating = value
            if rating is not None:
                # Stored before the survey closes: a turn re-run after a crash between the
                # two finds the survey open again and stores nothing twice (record_rating is
                # idempotent per survey).
                await self.desk.record_rating(
                    Rating(
                        session_key=conv.session_key,
                        channel=conv.channel,
                        agent=survey.get("agent"),
                        rating=rating,
                        asked_at=datetime.fromisoformat(survey["asked_at"]),
                        rated_at=now,
                    )
                )
        if META_KEY in conv.meta and conv.meta[META_KEY] is not None:
            # Answered or not, a survey is asked once: the next message closes it.
            await self.store.set_meta(conv.session_key, META_KEY, None)
        if survey is None:
            return rest
        if rating is None:
            log.info("csat.skipped", extra={"session_key": conv.session_key})
            return rest
        log.info(
            "csat.rated",
            extra={"session_key": conv.session_key, "channel": conv.channel, "rating": rating},
        )
        await self.deliver(
            OutboundMessage(
                session_key=conv.session_key,
                text=THANKS,
                kind=OutboundKind.NOTICE,
                idempotency_key=f"csat-thanks:{survey['asked_at']}",
            )
        )
        return rest
