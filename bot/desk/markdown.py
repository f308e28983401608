"""Markdown to safe HTML for the console and the web chat widget.

Bot answers are CommonMark (:class:`bot.envelope.OutboundMessage`); text from customers and
from knowledge documents can hold anything, so rendering is two steps, each enough alone:

1. ``markdown-it-py`` (CommonMark, raw HTML *off*: ``<img onerror=...>`` becomes text; its link
   validator drops ``javascript:``, ``vbscript:``, ``file:`` and most ``data:`` URLs), plus
   bare ``http(s)://`` URLs turned into links;
2. ``nh3`` (the Rust ``ammonia`` sanitizer) with an allow-list of tags and attributes, only
   ``http``, ``https`` and ``mailto`` URLs, ``rel="noopener noreferrer"`` on links.

The result is a fragment a browser may put in ``innerHTML``: no script, event handler, style,
form or frame survives, and no URL scheme that runs code.
"""

from __future__ import annotations

import functools
import re
from typing import Final

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

ALLOWED_TAGS: Final = frozenset(
    {
        "a", "p", "br", "strong", "em", "code", "pre", "ul", "ol", "li", "blockquote",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th",
        "td", "del", "s",
    }
)  # fmt: skip
"""Tags the sanitizer keeps (others are removed, their text kept)."""

ALLOWED_ATTRIBUTES: Final = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}}
"""Attributes the sanitizer keeps, per tag."""

URL_SCHEMES: Final = frozenset({"http", "https", "mailto"})
"""URL schemes links may use."""

_BARE_URL = re.compile(r"https?://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]]")


def _linkify(state: StateCore) -> None:
    """A core rule: bare ``http(s)://`` URLs in text (outside links and code) become links."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        out: list[Token] = []
        depth = 0
        for tok in block.children:
            if tok.type == "link_open":
                depth += 1
            elif tok.type == "link_close":
                depth -= 1
            if tok.type != "text" or depth > 0 or "://" not in tok.content:
                out.append(tok)
                continue
            pos = 0
            for match in _BARE_URL.finditer(tok.content):
                if match.start() > pos:
                    out.append(_text(tok.content[pos : match.start()]))
                url = match.group(0)
                link = Token("link_open", "a", 1)
                link.attrs = {"href": url}
                out += [link, _text(url), Token("link_close", "a", -1)]
                pos = match.end()
            if pos < len(tok.content):
                out.append(_text(tok.content[pos:]))
        block.children = out


def _text(content: str) -> Token:
    tok = Token("text", "", 0)
    tok.content = content
    return tok


@functools.cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(
        ["table", "strikethrough"]
    )
    md.core.ruler.push("switchboard_linkify", _linkify)
    return md


def render_markdown(text: str) -> str:
    """Render CommonMark ``text`` to a sanitized HTML fragment (see the module docstring).

    Args:
        text: Markdown from the bot, an agent, a customer or a document.

    Returns:
        HTML safe to assign to ``innerHTML`` (links get ``rel="noopener noreferrer"`` and
        ``target="_blank"``).
    """
    html = _parser().render(text or "")
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    ).strip()


def plain_text(text: str) -> str:
    """The words of CommonMark ``text`` without markup: one line per block (paragraph, item).

    Raw HTML in the source stays as the literal text it is shown as.
    """
    lines: list[str] = []
    for tok in _parser().parse(text or ""):
        if tok.type == "inline":
            words = "".join(
                child.content if child.type in ("text", "code_inline") else " "
                for child in tok.children or []
                if child.type in ("text", "code_inline", "softbreak", "hardbreak")
            )
            if words.strip():
                lines.append(" ".join(words.split()))
        elif tok.type in ("code_block", "fence") and tok.content.strip():
            lines.append(" ".join(tok.content.split()))
    return "\n".join(lines)
