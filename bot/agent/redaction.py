"""PII redaction of a turn's LLM requests: the provider sees tokens, the edge sees values.

:class:`TurnRedaction` sits between :class:`~bot.agent.llm.LLMAgent` and the provider. Every
message content of every request (system prompt with the retrieved passages, the compaction
digest, history, the customer's message, tool results) passes :meth:`TurnRedaction.outbound`,
which replaces detected values by reversible tokens (``<EMAIL_1>``, see
:mod:`bot.privacy.vault`). What comes back is restored only at the edge: tool-call arguments
just before a tool runs (:meth:`TurnRedaction.restore_data`), the answer before it leaves the
agent (:meth:`TurnRedaction.restore`), and streamed text chunk by chunk
(:meth:`TurnRedaction.stream`). The chat messages the agent keeps between rounds stay in
token form, so a value never travels to the provider even through the model's own earlier
tool calls.

**Across workers.** A vault is a pure function of the texts it was fed, in order: a turn
first feeds the session's stored history (oldest first), then the customer's messages, then
the system prompt, so a turn resumed by another worker process (Redis lanes, lease expiry)
reissues the very same tokens from the same stored messages. Nothing else is persisted: the
values already live in the session's messages (covered by retention and erasure), and no
second copy of them is written anywhere, least of all to logs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bot.privacy.injection import marker_spans
from bot.privacy.vault import StreamRestorer, Vault

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.privacy.redact import PiiSpan, Redactor

log = logging.getLogger(__name__)


def redaction_wanted(settings: Settings) -> bool:
    """Whether any channel redacts anything (``pii_entities`` or a ``pii_channel_entities``).

    Cheap: call it at start to refuse bad settings early.

    Raises:
        bot.errors.ConfigError: an unknown entity type.
    """
    from bot.privacy.redact import check_entity_types

    wanted = [settings.pii_entities, *settings.pii_channel_entities.values()]
    return bool(check_entity_types(name for names in wanted for name in names))


async def load_redactor(settings: Settings) -> Redactor:
    """The process's shared redactor for these settings, built on first use.

    Building one loads Presidio (seconds of CPU), so it happens in a worker thread at the
    first turn that needs it, once per distinct ``(pii_score_threshold, pii_phone_regions,
    pii_spacy_model)``, and never in a process that runs no turn (an ingress-only ``serve``).

    Raises:
        bot.errors.ConfigError: a ``pii_spacy_model`` that is not installed.
    """
    return await asyncio.to_thread(
        _shared_redactor,
        settings.pii_score_threshold,
        tuple(settings.pii_phone_regions),
        settings.pii_spacy_model,
    )


_BUILD_LOCK = threading.Lock()


@functools.cache
def _cached_redactor(
    score_threshold: float, phone_regions: tuple[str, ...], spacy_model: str | None
) -> Redactor:
    from bot.privacy.redact import Redactor

    redactor = Redactor(
        None,
        score_threshold=score_threshold,
        phone_regions=phone_regions,
        spacy_model=spacy_model,
    )
    if redactor.cue_only:
        log.warning(
            "privacy.entities_cue_only",
            extra={"entities": list(redactor.cue_only), "reason": "no pii_spacy_model"},
        )
    return redactor


def _shared_redactor(
    score_threshold: float, phone_regions: tuple[str, ...], spacy_model: str | None
) -> Redactor:
    with _BUILD_LOCK:  # two first turns at once build it once
        return _cached_redactor(score_threshold, phone_regions, spacy_model)


ANALYSIS_CACHE_TEXTS = 2048
"""Texts whose PII analysis is kept between turns (history is re-sent every turn)."""


@functools.lru_cache(maxsize=ANALYSIS_CACHE_TEXTS)
def _analysis(redactor: Redactor, text: str, entities: tuple[str, ...]) -> list[PiiSpan]:
    """Presidio's spans for ``text``, cached between turns.

    A turn re-sends the session's history, so the same texts are analyzed turn after turn;
    tokens are still issued per turn. The cache lives in process memory only. Spans touching a
    data marker (:func:`bot.privacy.injection.spotlight`) are dropped: the request is redacted
    after data was marked, and a marker's random id that read as a number (a phone, an Indian
    PAN) would become a token and break the marker.
    """
    spans = redactor.analyze(text, entities)
    markers = marker_spans(text)
    if not markers:
        return spans
    return [s for s in spans if all(s.end <= a or s.start >= b for a, b in markers)]


class TurnRedaction:
    """Redaction state of one turn: its vault and the texts already redacted into it.

    Not thread-safe: one turn awaits its calls one at a time (each runs Presidio in a worker
    thread).

    Args:
        redactor: the shared redactor; None turns redaction off (texts pass unchanged).
        entities: entity types redacted on the turn's channel (``Settings.pii_entities_for``).
    """

    def __init__(self, redactor: Redactor | None, entities: Sequence[str]) -> None:
        self.vault = Vault()
        self._redactor = redactor if entities else None
        self._entities = list(entities)
        self._done: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"TurnRedaction(on={self._redactor is not None}, {self.vault!r})"

    @property
    def enabled(self) -> bool:
        """Whether this turn redacts anything."""
        return self._redactor is not None

    async def feed(self, texts: Iterable[str]) -> None:
        """Redact ``texts`` in order (numbering tokens in that order), remembering the results.

        Args:
            texts: texts about to be sent, oldest first.
        """
        if self._redactor is None:
            return
        todo = list(dict.fromkeys(t for t in texts if t and t not in self._done))
        if todo:
            await asyncio.to_thread(self._redact_all, todo)

    def redacted(self, text: str) -> str:
        """The redacted form of a text already given to :meth:`feed`.

        ``text`` itself when redaction is off or it was not fed (every request still passes
        :meth:`outbound`, which redacts whatever was not).
        """
        return self._done.get(text, text)

    async def redact(self, text: str) -> str:
        """``text`` with tokens instead of values (fed into the vault like :meth:`feed`)."""
        await self.feed([text])
        return self._done.get(text, text)

    def _redact_all(self, texts: Sequence[str]) -> None:
        assert self._redactor is not None
        entities = tuple(self._entities)
        for text in texts:
            if text not in self._done:
                spans = _analysis(self._redactor, text, entities)
                self._done[text] = self._redactor.tokenize(text, spans, self.vault)

    async def outbound(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of chat ``messages`` whose string contents carry tokens instead of values.

        Args:
            messages: OpenAI Chat Completions message dicts (``content`` a string or None).

        Returns:
            New dicts (the inputs are not modified); other keys (``tool_calls``...) as given.
        """
        if self._redactor is None:
            return list(messages)
        contents = [m.get("content") for m in messages]
        await self.feed(c for c in contents if isinstance(c, str))
        return [
            {**m, "content": self._done.get(c, c)} if isinstance(c, str) else m
            for m, c in zip(messages, contents, strict=True)
        ]

    def restore(self, text: str) -> str:
        """``text`` with every token of this turn replaced by its value."""
        return self.vault.restore(text)

    def restore_data(self, data: Any) -> Any:
        """JSON-like ``data`` (tool-call arguments) with tokens restored in every string."""
        return self.vault.restore_data(data)

    def stream(self) -> StreamRestorer:
        """A restorer for one streamed completion (holds back a token split across chunks)."""
        return StreamRestorer(self.vault)
