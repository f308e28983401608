"""Token estimates for fitting a chat request into the model's context window."""

from __future__ import annotations

import json
from typing import Any

import litellm

TOKENIZER_MODEL = "gpt-3.5-turbo"
"""Token counts are estimated with this model's tokenizer (cl100k_base, bundled with litellm,
no download) whatever model answers; :data:`TOKEN_SAFETY` covers the difference."""

TOKEN_SAFETY = 0.9
"""Only this share of the context window is filled (tokenizers of other models differ)."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens each chat message costs beyond its content (role and separators)."""


def count_tokens(text: str) -> int:
    """Estimated tokens of ``text`` (see :data:`TOKENIZER_MODEL`)."""
    if not text:
        return 0
    return int(litellm.token_counter(model=TOKENIZER_MODEL, text=text))


def message_tokens(message: dict[str, Any]) -> int:
    """Estimated tokens of one chat message (content, tool calls and overhead).

    Args:
        message: a Chat Completions message (``role``, ``content``, optional ``tool_calls``).
    """
    content = message.get("content")
    total = MESSAGE_OVERHEAD_TOKENS + count_tokens(content if isinstance(content, str) else "")
    if message.get("tool_calls"):
        total += count_tokens(json.dumps(message["tool_calls"]))
    return total
