"""Replies as Discord messages: text parts of at most 2,000 characters and a ``Sources`` embed.

Wire formats (Discord API v10): message ``content`` (at most 2,000 characters) and embed objects,
https://discord.com/developers/docs/resources/message#create-message and
https://discord.com/developers/docs/resources/message#embed-object. Discord's Markdown is close
to CommonMark, so the text is sent as the agent wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bot.envelope import Citation, OutboundKind, OutboundMessage

MAX_MESSAGE_CHARS = 2000
"""Discord's limit on ``content`` of one message (characters)."""
MAX_BUTTONS = 25
"""Five action rows of five buttons."""
MAX_THREAD_NAME_CHARS = 100


def render_text(out: OutboundMessage) -> str:
    """The message text for Discord (its Markdown is close to CommonMark; kept as is).

    A human agent's reply is signed with the agent's name in bold.
    """
    text = out.text.strip()
    if out.kind == OutboundKind.AGENT and out.author:
        return f"**{out.author}** (support team): {text}"
    return text


def split_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Split ``text`` into messages of at most ``limit`` characters.

    Cuts at the last paragraph break, else line break, else space before the limit; a run
    without any is cut hard. Fenced code blocks cut in two are closed and reopened.

    Returns:
        The parts (at least one; an empty text gives ``[""]``).
    """
    parts: list[str] = []
    rest = text
    reopen = ""
    while len(reopen) + len(rest) > limit:
        room = limit - len(reopen)
        window = rest[:room]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            cut = window.rfind(sep)
            if cut > room // 4:
                break
        if cut <= 0:
            cut = room
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n ")
        chunk = reopen + head
        fence = _open_fence(chunk)
        if fence is not None and len(chunk) + 4 <= limit:
            chunk += "\n```"
            reopen = fence + "\n"
        else:
            reopen = ""
        parts.append(chunk)
    parts.append(reopen + rest)
    return parts


def _open_fence(text: str) -> str | None:
    """The opening line of a fenced code block left open at the end of ``text``, if any."""
    opening: str | None = None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            opening = None if opening is not None else line.strip()
    return opening


def citations_embed(citations: Sequence[Citation]) -> dict[str, Any] | None:
    """The ``Sources`` embed (resources/message#embed-object) listing cited documents.

    Returns:
        An embed dict with a numbered ``description`` (``[title](url)`` when a URL is known),
        or None without citations.
    """
    if not citations:
        return None
    lines = []
    for n, c in enumerate(citations, 1):
        title = c.title.replace("[", "(").replace("]", ")")
        lines.append(f"{n}. [{title}]({c.url})" if c.url else f"{n}. {title}")
    return {"title": "Sources", "description": "\n".join(lines)[:4096], "type": "rich"}


_EMBED_LINE = re.compile(r"^\d+\. (?:\[(?P<linked>.*)\]\((?P<url>[^)\s]+)\)|(?P<plain>.*))$")


def embed_citations(embed: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """Read a :func:`citations_embed` back: ``[(title, url or None), ...]``."""
    out: list[tuple[str, str | None]] = []
    for line in str(embed.get("description", "")).splitlines():
        m = _EMBED_LINE.match(line)
        if m is None:
            continue
        if m.group("plain") is not None:
            out.append((m.group("plain"), None))
        else:
            out.append((m.group("linked"), m.group("url")))
    return out


def thread_name(text: str, fallback: str) -> str:
    """A thread name from the customer's first words (at most 100 characters)."""
    words = " ".join(text.split())
    if not words:
        return fallback[:MAX_THREAD_NAME_CHARS]
    if len(words) <= MAX_THREAD_NAME_CHARS:
        return words
    return words[: MAX_THREAD_NAME_CHARS - 1].rsplit(" ", 1)[0] + "…"
