"""CommonMark to Telegram HTML, split into messages of at most 4,096 characters.

Telegram's HTML parse mode (https://core.telegram.org/bots/api#html-style) knows only ``b``,
``i``, ``u``, ``s``, ``a href``, ``code``, ``pre`` (with ``code class="language-…"``),
``blockquote`` and ``tg-spoiler``, and only the entities ``&lt;``, ``&gt;``, ``&amp;``,
``&quot;`` and numeric ones. The Markdown is parsed with markdown-it-py; headings become bold
lines, lists become ``•`` / ``1.`` lines, raw HTML in the Markdown is shown as text, and links
keep only ``http``, ``https``, ``tg`` and ``mailto`` targets.

Splitting (``sendMessage`` takes 1-4,096 characters) happens between top-level blocks
(paragraphs, lists, code blocks), so every part is valid HTML on its own; a single block longer
than the limit is sent as escaped plain text cut at line, then word boundaries. Lengths are
counted in UTF-16 code units, as Telegram counts them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.envelope import Citation

MAX_MESSAGE_CHARS: Final = 4096
"""``sendMessage`` text limit (characters after entity parsing; we bound the HTML source)."""

SOURCES_HEADING: Final = "Sources:"
_SAFE_SCHEMES = ("http://", "https://", "tg://", "mailto:")
_LANG = re.compile(r"^[A-Za-z0-9_+#.-]{1,32}$")
_md = MarkdownIt("commonmark", {"html": True}).enable("strikethrough")


@dataclass(frozen=True, slots=True)
class Block:
    """One top-level block: its Telegram HTML and its plain text (used when it must be cut)."""

    html: str
    plain: str


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (how Telegram measures message text)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """Escape text for Telegram HTML (``&``, ``<``, ``>``)."""
    return html.escape(text, quote=False)


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


# --- inline -----------------------------------------------------------------------------------
def _inline(node: SyntaxTreeNode, *, plain: bool, in_link: bool = False) -> str:
    out: list[str] = []
    for child in node.children:
        t = child.type
        if t == "text":
            out.append(child.content if plain else escape(child.content))
        elif t in ("softbreak", "hardbreak"):
            out.append("\n")
        elif t == "code_inline":
            out.append(child.content if plain else f"<code>{escape(child.content)}</code>")
        elif t == "html_inline":
            out.append(child.content if plain else escape(child.content))
        elif t in ("strong", "em", "s"):
            inner = _inline(child, plain=plain, in_link=in_link)
            tag = {"strong": "b", "em": "i", "s": "s"}[t]
            out.append(inner if plain else f"<{tag}>{inner}</{tag}>")
        elif t == "link":
            inner = _inline(child, plain=plain, in_link=True)
            href = str(child.attrs.get("href", ""))
            if plain or in_link or not href.startswith(_SAFE_SCHEMES):
                out.append(inner)
            else:
                out.append(f'<a href="{_attr(href)}">{inner}</a>')
        elif t == "image":
            alt = _inline(child, plain=True) or "image"
            src = str(child.attrs.get("src", ""))
            if plain or in_link or not src.startswith(_SAFE_SCHEMES):
                out.append(alt if plain else escape(alt))
            else:
                out.append(f'<a href="{_attr(src)}">{escape(alt)}</a>')
        else:  # unknown inline token: its text, escaped
            out.append(_inline(child, plain=plain, in_link=in_link) or escape(child.content))
    return "".join(out)


# --- blocks -----------------------------------------------------------------------------------
def _indent(text: str, prefix: str) -> str:
    pad = " " * len(prefix)
    lines = text.split("\n")
    return "\n".join([prefix + lines[0], *(pad + line for line in lines[1:])])


def _block(node: SyntaxTreeNode, *, plain: bool, quoted: bool = False) -> str:
    t = node.type
    if t == "paragraph":
        return "".join(_inline(c, plain=plain) for c in node.children)
    if t == "heading":
        inner = "".join(_inline(c, plain=plain) for c in node.children)
        return inner if plain else f"<b>{inner}</b>"
    if t in ("bullet_list", "ordered_list"):
        start = node.attrs.get("start", 1) if t == "ordered_list" else 1
        number = int(start) if isinstance(start, int | str) and str(start).isdigit() else 1
        items = []
        for i, item in enumerate(node.children):
            body = "\n".join(_block(c, plain=plain, quoted=quoted) for c in item.children)
            prefix = "• " if t == "bullet_list" else f"{number + i}. "
            items.append(_indent(body, prefix))
        return "\n".join(items)
    if t == "blockquote":
        inner = "\n".join(_block(c, plain=plain, quoted=True) for c in node.children)
        if plain:
            return "\n".join("> " + line for line in inner.split("\n"))
        return inner if quoted else f"<blockquote>{inner}</blockquote>"
    if t in ("fence", "code_block"):
        code = node.content.rstrip("\n")
        if plain:
            return code
        lang = node.info.strip().split(" ")[0] if t == "fence" else ""
        if lang and _LANG.match(lang):
            return f'<pre><code class="language-{lang}">{escape(code)}</code></pre>'
        return f"<pre>{escape(code)}</pre>"
    if t == "hr":
        return "———"
    if t == "html_block":
        text = node.content.rstrip("\n")
        return text if plain else escape(text)
    inner = "\n".join(_block(c, plain=plain, quoted=quoted) for c in node.children)
    return inner or (node.content if plain else escape(node.content))


def markdown_blocks(text: str) -> list[Block]:
    """Render CommonMark as Telegram HTML, one :class:`Block` per top-level block."""
    root = SyntaxTreeNode(_md.parse(text))
    blocks = []
    for node in root.children:
        rendered = _block(node, plain=False)
        if rendered.strip():
            blocks.append(Block(html=rendered, plain=_block(node, plain=True)))
    return blocks


def citation_block(citations: Sequence[Citation]) -> Block | None:
    """``Sources:`` then one ``•`` line per citation, a link when it has a URL."""
    if not citations:
        return None
    lines_html = [SOURCES_HEADING]
    lines_plain = [SOURCES_HEADING]
    for c in citations:
        if c.url and c.url.startswith(_SAFE_SCHEMES):
            lines_html.append(f'• <a href="{_attr(c.url)}">{escape(c.title)}</a>')
        else:
            lines_html.append(f"• {escape(c.title)}")
        lines_plain.append(f"• {c.title}")
    return Block(html="\n".join(lines_html), plain="\n".join(lines_plain))


def _cut_plain(text: str, limit: int) -> list[str]:
    """Escaped pieces of ``text``, each at most ``limit`` UTF-16 units, cut at lines/words."""
    pieces: list[str] = []
    current = ""
    for token in re.split(r"(\n|[ \t]+)", text):
        candidate = current + token
        if utf16_len(escape(candidate)) <= limit:
            current = candidate
            continue
        if current.strip():
            pieces.append(escape(current.strip("\n")))
        current = token.lstrip("\n") if not token.isspace() else ""
        while utf16_len(escape(current)) > limit:  # one word longer than the limit
            cut = limit
            while utf16_len(escape(current[:cut])) > limit:
                cut -= max(1, (utf16_len(escape(current[:cut])) - limit) // 6)
            pieces.append(escape(current[:cut]))
            current = current[cut:]
    if current.strip():
        pieces.append(escape(current.strip("\n")))
    return pieces


def split_messages(blocks: Sequence[Block], limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Pack blocks into messages of at most ``limit`` UTF-16 units, split between blocks.

    Blocks are joined by a blank line. A block longer than ``limit`` on its own becomes
    escaped plain text cut at line, then word boundaries (its formatting is dropped, so no tag
    is ever cut in two).
    """
    parts: list[str] = []
    current = ""
    for block in blocks:
        pieces = [block.html] if utf16_len(block.html) <= limit else _cut_plain(block.plain, limit)
        for piece in pieces:
            joined = f"{current}\n\n{piece}" if current else piece
            if utf16_len(joined) <= limit:
                current = joined
            else:
                parts.append(current)
                current = piece
    if current:
        parts.append(current)
    return parts


def render_message(
    text: str,
    *,
    citations: Sequence[Citation] = (),
    author: str | None = None,
    limit: int = MAX_MESSAGE_CHARS,
) -> list[str]:
    """One outbound message as Telegram HTML parts, in order.

    Args:
        text: CommonMark.
        citations: appended as a ``Sources:`` block with links.
        author: a human agent's display name, shown in bold above the text.
        limit: the per-message limit in UTF-16 units.

    Returns:
        At least one part (a lone ``…`` when everything was empty), each valid Telegram HTML.
    """
    blocks = markdown_blocks(text)
    if author:
        blocks.insert(0, Block(html=f"<b>{escape(author)}</b>", plain=author))
    sources = citation_block(citations)
    if sources is not None:
        blocks.append(sources)
    return split_messages(blocks, limit) or ["…"]
