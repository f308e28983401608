"""The per-turn vault of reversible PII tokens.

Before text goes to the LLM provider, each detected value is replaced by a token such as
``<EMAIL_1>``; the vault remembers which value each token stands for. The model's answer and
its tool-call arguments come back with tokens, and :meth:`Vault.restore` puts the real values
back at the edge (tool execution, the customer's channel). The provider never sees the values.

Token syntax: ``<LABEL_N>`` where ``LABEL`` is upper-case ASCII letters, digits and ``_``
(starting with a letter) and ``N`` a positive decimal integer counted per label from 1.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

TOKEN_RE = re.compile(r"<([A-Z][A-Z0-9_]*?)_([1-9][0-9]*)>")
"""A token: group 1 is the label, group 2 the number."""
_LABEL_RE = re.compile(r"[A-Z][A-Z0-9_]*")


class Vault:
    """Tokens issued during one turn and the values they stand for.

    The same ``(label, value)`` pair always gets the same token within one vault, so a value
    repeated across the customer's message, the history and tool output reads the same to the
    model. A vault never logs or prints its values: ``repr`` shows only how many it holds.

    A token-like string already present in text handed to :meth:`reserve` (for example typed by
    the customer) is never issued, so restoring cannot turn such literal text into someone's
    value.
    """

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._tokens: dict[tuple[str, str], str] = {}
        self._counts: Counter[str] = Counter()
        self._reserved: set[str] = set()

    def __repr__(self) -> str:
        return f"Vault(tokens={len(self._values)})"

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, token: object) -> bool:
        return token in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def reserve(self, text: str) -> None:
        """Mark every token-like string in ``text`` as never to be issued.

        Args:
            text: text about to be redacted into this vault.
        """
        self._reserved.update(m.group(0) for m in TOKEN_RE.finditer(text))

    def token_for(self, label: str, value: str) -> str:
        """The token standing for ``value``, issuing a new one on first sight.

        Args:
            label: the token label, e.g. ``EMAIL`` (upper-case letters, digits, ``_``).
            value: the real text the token replaces (non-empty).

        Returns:
            A token such as ``<EMAIL_1>``.

        Raises:
            ValueError: when the label does not fit the token syntax or the value is empty.
        """
        if not value:
            raise ValueError("cannot tokenize an empty value")
        if _LABEL_RE.fullmatch(label) is None:
            raise ValueError(f"label {label!r} does not fit the token syntax")
        key = (label, value)
        token = self._tokens.get(key)
        if token is not None:
            return token
        while True:
            self._counts[label] += 1
            token = f"<{label}_{self._counts[label]}>"
            if token not in self._reserved:
                break
        self._tokens[key] = token
        self._values[token] = value
        return token

    def value_of(self, token: str) -> str | None:
        """The value ``token`` stands for, or None when this vault did not issue it."""
        return self._values.get(token)

    def restore(self, text: str) -> str:
        """Put the real values back in place of the tokens this vault issued.

        Tokens the vault did not issue (unknown numbers, literal text the customer typed) are
        left as they are.

        Args:
            text: model output or any text carrying tokens.

        Returns:
            The text with every known token replaced by its value.
        """
        if not self._values:
            return text
        return TOKEN_RE.sub(lambda m: self._values.get(m.group(0), m.group(0)), text)

    def restore_data(self, data: Any) -> Any:
        """:meth:`restore` applied to every string in JSON-like data (tool-call arguments).

        Args:
            data: str, list, tuple, dict (keys and values) or scalars, nested.

        Returns:
            A copy with tokens restored in every string; other scalars unchanged.
        """
        if isinstance(data, str):
            return self.restore(data)
        if isinstance(data, Mapping):
            return {self.restore_data(k): self.restore_data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return type(data)(self.restore_data(v) for v in data)
        return data


_PARTIAL_TOKEN_RE = re.compile(r"<(?:[A-Z][A-Z0-9_]*)?")  # "<", "<EMA", "<EMAIL_1"
_MAX_TOKEN_CHARS = 64


class StreamRestorer:
    """Restores tokens in an answer that arrives in chunks (LLM streaming).

    A token may be split across chunks (``"<EMA"`` then ``"IL_1> thanks"``); a trailing
    piece that could still become a token is held back until the next chunk decides it.

    Args:
        vault: the turn's vault.
    """

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._pending = ""

    def feed(self, chunk: str) -> str:
        """Add a chunk; returns the restored text that is safe to show now.

        Args:
            chunk: the next piece of model output.

        Returns:
            Restored text (possibly empty); the held-back tail comes with a later call.
        """
        text = self._pending + chunk
        cut = len(text)
        start = text.rfind("<")
        if (
            start != -1
            and len(text) - start < _MAX_TOKEN_CHARS
            and _PARTIAL_TOKEN_RE.fullmatch(text, start)
        ):
            cut = start
        self._pending = text[cut:]
        return self.vault.restore(text[:cut])

    def flush(self) -> str:
        """The held-back tail, restored; call once when the stream ends."""
        rest, self._pending = self._pending, ""
        return self.vault.restore(rest)
