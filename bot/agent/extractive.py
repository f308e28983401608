"""The extractive agent: the embedded default when no model is configured.

It answers with the best supporting knowledge-base passages (with citations) when retrieval is
confident, replies to small talk, and escalates otherwise.
"""

from __future__ import annotations

import logging
import re

from bot.agent.base import (
    ESCALATE_CUSTOMER_REQUEST,
    ESCALATE_NO_ANSWER,
    AgentReply,
    TurnInput,
)
from bot.config import Settings
from bot.envelope import TALK_TO_HUMAN
from bot.human_request import wants_human
from bot.retrieval import Retriever, citations_of

log = logging.getLogger(__name__)

DEFAULT_MIN_CONFIDENCE = 0.5
"""Passage ``confidence`` (0..1) above which the extractive agent answers."""


_GREETING_WORDS = frozenset(
    (
        "hi",
        "hello",
        "hey",
        "hiya",
        "howdy",
        "hallo",
        "greetings",
        "good",
        "morning",
        "afternoon",
        "evening",
        "day",
        "there",
        "all",
        "team",
        "folks",
        "everyone",
        "yo",
    )
)
_GREETING_KEYS = frozenset(
    (
        "hi",
        "hello",
        "hey",
        "hiya",
        "howdy",
        "hallo",
        "greetings",
        "morning",
        "afternoon",
        "evening",
        "yo",
    )
)
_THANKS_WORDS = frozenset(
    (
        "thanks",
        "thank",
        "you",
        "thx",
        "ty",
        "cheers",
        "much",
        "so",
        "very",
        "a",
        "lot",
        "many",
        "great",
        "ok",
        "okay",
        "perfect",
        "awesome",
        "cool",
        "got",
        "it",
        "that",
        "helps",
        "helped",
    )
)
_THANKS_KEYS = frozenset(("thanks", "thank", "thx", "ty", "cheers"))
_BYE_WORDS = frozenset(
    ("bye", "goodbye", "see", "you", "later", "ciao", "have", "a", "nice", "good", "day")
)
_BYE_KEYS = frozenset(("bye", "goodbye", "ciao"))


def _small_talk(text: str) -> str | None:
    """``greeting``, ``thanks`` or ``bye`` when ``text`` is only that (6 words at most)."""
    words = re.findall(r"[a-z']+", text.lower())
    if not words or len(words) > 6:
        return None
    bag = set(words)
    for kind, vocabulary, keys in (
        ("thanks", _THANKS_WORDS, _THANKS_KEYS),
        ("greeting", _GREETING_WORDS, _GREETING_KEYS),
        ("bye", _BYE_WORDS | _THANKS_WORDS, _BYE_KEYS),
    ):
        if bag <= vocabulary and bag & keys:
            return kind
    return None


def excerpt(text: str, limit: int = 900) -> str:
    """``text`` cut to about ``limit`` characters.

    The cut falls at a paragraph, sentence or word boundary; an unclosed code fence is closed.
    """
    text = text.strip()
    if len(text) > limit:
        cut = text[:limit]
        para = cut.rfind("\n\n")
        sentence = max(cut.rfind(". "), cut.rfind(".\n"))
        if para > limit // 2:
            cut = cut[:para]
        elif sentence > limit // 2:
            cut = cut[: sentence + 1]
        else:
            cut = cut.rsplit(None, 1)[0] + " …"
        text = cut.rstrip()
    if text.count("```") % 2:
        text += "\n```"
    return text


def _without_heading_line(text: str, heading: str, title: str) -> str:
    """Drop a leading Markdown heading that repeats the passage's heading or title."""
    first, _, rest = text.strip().partition("\n")
    if first.startswith("#"):
        name = first.lstrip("#").strip().lower()
        last = heading.split(">")[-1].strip().lower()
        if name in {last, title.strip().lower()}:
            return rest.strip()
    return text


class ExtractiveAgent:
    """The embedded default agent, with no model: quotes the knowledge base.

    Retrieves for the turn's text. When a passage's ``confidence`` reaches ``min_confidence``
    (and its score ``settings.answer_min_score``), it answers with the best-ranked such passage
    (and the next one when nearly as confident), trimmed, under a short lead-in, with
    citations; otherwise it escalates with ``no_answer`` and empty text. Greetings, thanks and
    goodbyes get a short friendly reply; an explicit request for a person escalates with
    ``customer_request``.

    ``min_confidence`` defaults to :data:`DEFAULT_MIN_CONFIDENCE`; the hub should pass
    ``knowledge.RECOMMENDED_MIN_CONFIDENCE`` (``bot`` does not import ``knowledge``).
    """

    def __init__(
        self,
        settings: Settings,
        retriever: Retriever,
        *,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ) -> None:
        self._settings = settings
        self._retriever = retriever
        self._min_confidence = min_confidence

    async def respond(self, turn: TurnInput) -> AgentReply:
        """Answer one turn from the knowledge base alone.

        Raises:
            bot.errors.BackendUnavailable: when the knowledge base cannot be queried.
        """
        s = self._settings
        text = "\n".join(m.text.strip() for m in turn.messages if m.text.strip())
        extra = {"session_key": turn.session_key, "channel": turn.channel}
        if wants_human(text):
            return AgentReply("", escalate=ESCALATE_CUSTOMER_REQUEST)
        talk = _small_talk(text)
        if talk is not None:
            return AgentReply(self._small_talk_reply(talk), actions=[TALK_TO_HUMAN])
        if not text:
            return AgentReply("", escalate=ESCALATE_NO_ANSWER)
        passages = await self._retriever.search(text[:2000], top_k=s.retrieve_top_k)
        good = [
            p
            for p in passages
            if p.confidence >= self._min_confidence and p.score >= s.answer_min_score
        ]
        if not good:
            best = max((p.confidence for p in passages), default=0.0)
            log.info("agent.no_answer", extra={**extra, "best_confidence": best})
            return AgentReply("", escalate=ESCALATE_NO_ANSWER)
        chosen = [good[0]]  # retrieval rank order: the retriever's best confident passage
        if len(good) > 1 and good[1].confidence >= good[0].confidence - 0.05:
            chosen.append(good[1])
        parts = []
        for i, p in enumerate(chosen):
            where = f" — {p.heading.split('>')[-1].strip()}" if p.heading else ""
            lead = "Here's what I found in" if i == 0 else "Also from"
            body = excerpt(_without_heading_line(p.text, p.heading, p.title), 900 // len(chosen))
            parts.append(f"{lead} **{p.title}**{where}:\n\n{body}")
        log.info("agent.turn_done", extra={**extra, "citations": [p.doc_id for p in chosen]})
        return AgentReply(
            "\n\n".join(parts),
            citations=citations_of(chosen, s.max_citations),
            actions=[TALK_TO_HUMAN],
        )

    def _small_talk_reply(self, kind: str) -> str:
        s = self._settings
        if kind == "greeting":
            who = (
                f"the {s.company_name} support assistant"
                if s.bot_name == s.company_name
                else f"{s.bot_name}, the {s.company_name} support assistant"
            )
            return f"Hi! I'm {who}. What can I help you with?"
        if kind == "thanks":
            return "You're welcome! Is there anything else I can help with?"
        return "Goodbye, and thanks for getting in touch!"
