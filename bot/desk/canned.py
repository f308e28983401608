"""Canned replies: saved answers with placeholders that agents insert from the reply box.

Placeholders are written in braces and filled from the open conversation when the reply is
inserted (:func:`fill`): ``{customer.name}`` (the name the channel gave, else "there"),
``{customer.email}``
(only when the channel verified it), ``{ticket.id}``, ``{agent.name}`` (the agent's display
name), ``{channel}`` (the channel as people read it, e.g. "Web chat"). A placeholder with no value
for the conversation becomes empty text; an unknown one is refused when the reply is saved
(:func:`check`), so a typo never reaches a customer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from bot.errors import PayloadInvalid

PLACEHOLDERS: Final = (
    "customer.name",
    "customer.email",
    "ticket.id",
    "agent.name",
    "channel",
)
"""The placeholders a canned reply may use."""

SHORTCUT_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
"""Shortcuts: 1..64 of lower-case letters, digits, ``_`` and ``-`` (typed after ``/``)."""

TITLE_MAX_CHARS: Final = 200
BODY_MAX_CHARS: Final = 8000

_PLACEHOLDER = re.compile(r"\{([a-z_]+(?:\.[a-z_]+)?)\}")


def check(shortcut: str, title: str, body: str) -> None:
    """Validate a canned reply before it is saved.

    Raises:
        PayloadInvalid: a bad shortcut, an empty or too long title or body, or an unknown
            placeholder (``field`` names the field).
    """
    if not SHORTCUT_RE.match(shortcut):
        raise PayloadInvalid("shortcut must be 1-64 of a-z 0-9 _ - (lower case)", field="shortcut")
    if not title.strip() or len(title) > TITLE_MAX_CHARS:
        raise PayloadInvalid(f"title must be 1-{TITLE_MAX_CHARS} characters", field="title")
    if not body.strip() or len(body) > BODY_MAX_CHARS:
        raise PayloadInvalid(f"body must be 1-{BODY_MAX_CHARS} characters", field="body")
    unknown = sorted({m for m in _PLACEHOLDER.findall(body) if m not in PLACEHOLDERS})
    if unknown:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        raise PayloadInvalid(f"unknown placeholder {{{unknown[0]}}}; use {known}", field="body")


def fill(body: str, values: Mapping[str, str | None]) -> str:
    """``body`` with each known placeholder replaced by its value (empty when None).

    Args:
        body: the canned reply's text.
        values: placeholder name (``customer.name``...) to value.

    Returns:
        The text to put in the reply box; unknown ``{...}`` text is left as written.
    """

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in PLACEHOLDERS:
            return match.group(0)
        return values.get(name) or ""

    return _PLACEHOLDER.sub(one, body)
