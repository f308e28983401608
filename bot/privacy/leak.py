"""An output check: does an answer echo the system prompt?

Prompt leaking (Perez & Ribeiro, "Ignore Previous Prompt", 2022) makes a model repeat its
instructions. Whatever the input-side defences, the answer itself is checked before it leaves:
:class:`PromptEchoCheck` cuts the protected text (the system prompt's rules, never the
retrieved passages, which an answer may legitimately quote) into overlapping runs of
:data:`SHINGLE_WORDS` words, and an answer that reproduces :data:`MIN_HITS` of those runs
(about ten consecutive words, verbatim up to case and punctuation) is an echo. Paraphrase
evades it; verbatim dumps, the common case, do not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SHINGLE_WORDS = 8
"""Words per compared run."""

MIN_HITS = 3
"""Runs of the protected text an answer must reproduce to count as an echo."""

_WORD = re.compile(r"\w+")


def _shingles(text: str, size: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.casefold())
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


class PromptEchoCheck:
    """Recognizes answers that reproduce protected text (the system prompt's rules).

    Args:
        protected: the texts an answer must not reproduce.
        shingle_words: words per compared run.
        min_hits: runs an answer must reproduce to count as an echo.
    """

    def __init__(
        self,
        protected: Iterable[str],
        *,
        shingle_words: int = SHINGLE_WORDS,
        min_hits: int = MIN_HITS,
    ) -> None:
        self.shingle_words = shingle_words
        self.min_hits = min_hits
        self._runs: set[tuple[str, ...]] = set()
        for text in protected:
            self._runs |= _shingles(text, shingle_words)

    def __repr__(self) -> str:
        return f"PromptEchoCheck(runs={len(self._runs)}, min_hits={self.min_hits})"

    def echoes(self, answer: str) -> bool:
        """Whether ``answer`` reproduces at least ``min_hits`` runs of the protected text.

        Args:
            answer: model output (complete, or the part streamed so far).

        Returns:
            True when the answer must be withheld.
        """
        if not self._runs:
            return False
        hits = 0
        for run in _shingles(answer, self.shingle_words):
            if run in self._runs:
                hits += 1
                if hits >= self.min_hits:
                    return True
        return False
