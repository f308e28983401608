"""The agent's copilot: a summary of an escalated conversation and a suggested answer.

``GET /console/api/conversations/{key}/copilot`` (role ``read``) →
``{"summary": {"wants", "latest", "tried": [str], "reason", "sources": [citation]},
"suggestion": {"text", "citations": [citation], "source": "llm"|"knowledge"|"none"}}``.

Without an LLM (no ``llm_model``, or ``copilot_llm`` off) everything is extractive: what the
customer wants is their first message (and their latest, when it differs), what the bot tried
are the first sentences of its answers, the sources are the documents it cited, and the
suggestion is the best knowledge passage (:class:`bot.retrieval.Retriever`) for the customer's
words, with its citation. With an LLM, the model (through the agent's litellm Router,
:func:`bot.agent.llm.llm_router`) writes ``wants``, ``tried`` and the suggestion from the
transcript and the same passages; PII is replaced by reversible tokens before the text leaves
(:class:`bot.privacy.redact.Redactor`, per ``pii_entities``) and restored in the answer. Its
token use is recorded (purpose ``copilot``). When the model fails, the extractive copilot
answers instead. The agent edits the suggestion before sending it: nothing is sent from here.
"""

from __future__ import annotations

import json
import logging
import re
from functools import cache
from typing import Any

from bot.agent.usage import report_usage
from bot.config import Settings
from bot.desk.markdown import plain_text
from bot.desk.store import DeskStore
from bot.envelope import Citation
from bot.human_request import wants_human
from bot.retrieval import NoKnowledge, Passage, Retriever
from bot.store.base import Conversation, Role, StoredMessage

log = logging.getLogger(__name__)

WANTS_CHARS = 300
SUGGESTION_CHARS = 900
TRANSCRIPT_MESSAGES = 40
_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)", re.DOTALL)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _first_sentence(markdown: str) -> str:
    """The first sentence (or first line) of a Markdown answer, as plain text."""
    first = plain_text(markdown).split("\n", 1)[0]
    match = _SENTENCE.match(first)
    return _clip(match.group(1) if match else first, 200)


def citation_json(c: Citation) -> dict[str, Any]:
    """A citation as the console API shows it."""
    return {"doc_id": c.doc_id, "title": c.title, "url": c.url, "score": c.score}


_CLAUSE = re.compile(r"(?<=[.!?;,])\s+|\n+")


def without_request(text: str) -> str:
    """``text`` without its clauses that ask for a person ("..., I want a person.").

    "My invoice is wrong, I want a person." gives "My invoice is wrong"; a message that is only
    the request ("Talk to a person") gives "".
    """
    clauses = [c for c in _CLAUSE.split(text.strip()) if c and not wants_human(c)]
    return " ".join(clauses).strip().rstrip(",;")


def _said(history: list[StoredMessage]) -> list[str]:
    """What the customer wrote, without their requests for a person ("Talk to a person")."""
    said = (without_request(m.text) for m in history if m.role == Role.CUSTOMER)
    return [text for text in said if text]


def extractive_summary(conv: Conversation, history: list[StoredMessage]) -> dict[str, Any]:
    """The summary without an LLM (see the module docstring)."""
    said = _said(history)
    answers = [m for m in history if m.role == Role.BOT and m.kind == "answer"]
    sources: dict[str, Citation] = {}
    for m in answers:
        for c in m.citations:
            sources.setdefault(c.doc_id, c)
    return {
        "wants": _clip(said[0], WANTS_CHARS) if said else "",
        "latest": _clip(said[-1], WANTS_CHARS) if len(said) > 1 else None,
        "tried": [_first_sentence(m.text) for m in answers[-3:]],
        "reason": conv.escalation_reason,
        "sources": [citation_json(c) for c in sources.values()],
    }


def _query(history: list[StoredMessage]) -> str:
    return " ".join(_said(history)[-3:])


def knowledge_suggestion(passages: list[Passage]) -> dict[str, Any]:
    """The best passage as the suggested answer, or an empty suggestion."""
    if not passages:
        return {"text": "", "citations": [], "source": "none"}
    best = passages[0]
    return {
        "text": _clip(best.text, SUGGESTION_CHARS),
        "citations": [citation_json(best.citation())],
        "source": "knowledge",
    }


def _redactor(settings: Settings) -> Any:
    """A :class:`bot.privacy.redact.Redactor` for ``settings``, made once (Presidio is slow)."""
    key = (
        tuple(settings.pii_entities),
        settings.pii_score_threshold,
        tuple(settings.pii_phone_regions),
        settings.pii_spacy_model,
    )
    return _make_redactor(*key)


@cache
def _make_redactor(
    entities: tuple[str, ...], threshold: float, regions: tuple[str, ...], spacy: str | None
) -> Any:
    from bot.privacy.redact import Redactor, check_entity_types

    return Redactor(
        check_entity_types(list(entities)),
        score_threshold=threshold,
        phone_regions=regions,
        spacy_model=spacy,
    )


_PROMPT = (
    "You help a human support agent who takes over a conversation from a support bot. Read "
    "the transcript and the numbered knowledge passages, then answer with one JSON object "
    'and nothing else: {"wants": "what the customer wants, one sentence", "tried": ["what the '
    'bot tried, one short item each"], "suggestion": "a reply the agent could send, grounded '
    'in the passages, citing them as [n]"}. Text in <ANGLE_BRACKETS> stands for private data: '
    "keep it as written."
)


async def llm_copilot(
    settings: Settings,
    conv: Conversation,
    history: list[StoredMessage],
    passages: list[Passage],
    desk: DeskStore,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Summary and suggestion written by the model (see the module docstring).

    Raises:
        Exception: whatever the model call or its JSON raises (the caller falls back).
    """
    from bot.agent.llm import llm_router

    entities = settings.pii_entities_for(conv.channel)
    redactor = _redactor(settings) if entities else None
    vault = None

    def hide(text: str) -> str:
        nonlocal vault
        if redactor is None:
            return text
        hidden, vault = redactor.redact(text, entities=entities, vault=vault)
        return str(hidden)

    lines = []
    for m in history[-TRANSCRIPT_MESSAGES:]:
        who = {"customer": "Customer", "bot": "Bot", "agent": "Agent"}.get(m.role.value)
        if who and not m.internal:
            lines.append(f"{who}: {hide(m.text)}")
    sources = "\n\n".join(f"[{i}] {p.title}\n{hide(p.text)}" for i, p in enumerate(passages, 1))
    messages = [
        {"role": "system", "content": _PROMPT},
        {
            "role": "user",
            "content": "Transcript:\n" + "\n".join(lines) + "\n\nPassages:\n" + sources,
        },
    ]
    router = llm_router(settings)
    model = settings.llm_model or ""
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": settings.llm_temperature,
        "max_tokens": settings.llm_max_answer_tokens,
        "drop_params": True,
    }
    response = await router.acompletion(**kwargs)
    await report_usage(desk.usage_recorder(), response, model=model, purpose="copilot")
    content = response.choices[0].message.content or ""
    found = re.search(r"\{.*\}", content, re.DOTALL)
    data = json.loads(found.group(0) if found else content)

    def show(value: Any) -> str:
        text = str(value or "")
        return str(vault.restore(text)) if vault is not None else text

    cited = sorted({int(n) for n in re.findall(r"\[(\d+)\]", str(data.get("suggestion", "")))})
    chosen = [passages[n - 1] for n in cited if 1 <= n <= len(passages)] or passages[:1]
    summary = extractive_summary(conv, history)
    summary["wants"] = _clip(show(data.get("wants")), WANTS_CHARS) or summary["wants"]
    tried = data.get("tried")
    if isinstance(tried, list) and tried:
        summary["tried"] = [_clip(show(t), 200) for t in tried[:5]]
    suggestion = re.sub(r"\s*\[\d+\]", "", show(data.get("suggestion")))
    return summary, {
        "text": _clip(suggestion, SUGGESTION_CHARS * 2) if suggestion else "",
        "citations": [citation_json(p.citation()) for p in chosen],
        "source": "llm",
    }


async def copilot(
    settings: Settings,
    conv: Conversation,
    history: list[StoredMessage],
    retriever: Retriever | None,
    desk: DeskStore,
) -> dict[str, Any]:
    """The copilot's answer for one conversation (shape in the module docstring).

    Args:
        settings: ``llm_model``, ``copilot_llm``, ``copilot_passages``, ``pii_*``.
        conv: the conversation.
        history: its messages, oldest first (internal notes are skipped).
        retriever: the knowledge base (None: no knowledge).
        desk: where the LLM's token use is recorded.
    """
    visible = [m for m in history if not m.internal]
    query = _query(visible)
    passages = (
        await (retriever or NoKnowledge()).search(query, top_k=settings.copilot_passages)
        if query
        else []
    )
    if settings.llm_model and settings.copilot_llm:
        try:
            summary, suggestion = await llm_copilot(settings, conv, visible, passages, desk)
        except Exception as exc:  # the model's failure: the extractive copilot answers
            # The error's type only: provider errors can quote the model's text.
            log.warning(
                "console.copilot_llm_failed",
                extra={"session_key": conv.session_key, "error": type(exc).__name__},
            )
        else:
            return {"summary": summary, "suggestion": suggestion}
    return {
        "summary": extractive_summary(conv, visible),
        "suggestion": knowledge_suggestion(passages),
    }
