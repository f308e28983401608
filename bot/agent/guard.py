"""Prompt-injection screening of one turn's untrusted inputs.

:class:`TurnGuard` scores the customer's text, each retrieved passage and each tool result
with :class:`~bot.privacy.injection.InjectionDetector`. Once anything scores at or above
``injection_threshold`` the turn is *suspect*: the agent offers no tools for the rest of the
turn (an attack cannot open tickets, reach a CRM or escalate), flagged passages are left out of
the prompt, and a flagged tool result is replaced by a notice. Only scores, signal names and
ids are logged (``agent.injection_suspected``), never the text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from bot.privacy.injection import DataSource, InjectionDetector
from bot.retrieval import Passage

log = logging.getLogger(__name__)

_DETECTOR = InjectionDetector()

WITHHELD_TOOL_RESULT = (
    '{"error": "withheld", "message": "the result looked like instructions to the assistant '
    'and was not shown"}'
)
"""What the model reads instead of a flagged tool result."""


class TurnGuard:
    """Injection screening state of one turn.

    Args:
        threshold: ``injection_threshold``, the score (0 to 1) that flags a text.
        log_extra: ids logged with every flag (``session_key``, ``channel``).

    Attributes:
        suspect: set once any input of the turn was flagged.
    """

    def __init__(self, threshold: float, log_extra: Mapping[str, Any]) -> None:
        self.threshold = threshold
        self.suspect = False
        self._extra = dict(log_extra)

    def __repr__(self) -> str:
        return f"TurnGuard(threshold={self.threshold}, suspect={self.suspect})"

    def _flags(self, text: str, source: DataSource, **ids: str) -> bool:
        verdict = _DETECTOR.verdict(text)
        if verdict.score < self.threshold:
            return False
        self.suspect = True
        log.warning(
            "agent.injection_suspected",
            extra={
                **self._extra,
                **ids,
                "source": source.value,
                "score": verdict.score,
                "signals": list(verdict.signals),
            },
        )
        return True

    def customer(self, texts: Sequence[str]) -> None:
        """Score the customer's messages of the turn (overflow included), as one text."""
        self._flags("\n".join(texts), DataSource.CUSTOMER)

    def passages(self, passages: Sequence[Passage]) -> list[Passage]:
        """The passages that are not flagged, in order (flagging any makes the turn suspect)."""
        return [
            p for p in passages if not self._flags(p.text, DataSource.PASSAGE, doc_id=p.doc_id)
        ]

    def tool_result(self, tool: str, body: str) -> str:
        """``body``, or :data:`WITHHELD_TOOL_RESULT` when it is flagged.

        Args:
            tool: the tool's name (logged).
            body: the result as the model would read it (JSON text).
        """
        if self._flags(body, DataSource.TOOL, tool=tool):
            return WITHHELD_TOOL_RESULT
        return body
