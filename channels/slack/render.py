"""Outbound rendering: CommonMark to Slack ``mrkdwn``, split under Slack's limits, Block Kit.

Slack's ``mrkdwn`` (https://docs.slack.dev/messaging/formatting-message-text/) is not Markdown:
bold is ``*x*``, italic ``_x_``, strike ``~x~``, links ``<url|label>``, no headings or tables,
and the three characters ``&``, ``<`` and ``>`` must be escaped as ``&amp;``, ``&lt;``, ``&gt;``.
The CommonMark text is parsed with markdown-it-py and the syntax tree is written out as mrkdwn.

Limits (https://docs.slack.dev/reference/block-kit/blocks/): a ``section`` block's text holds at
most 3,000 characters, a message at most 50 blocks, a ``context`` block 10 elements, an
``actions`` block 25 elements, a button label 75 characters and a button value 2,000.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.envelope import OutboundKind, OutboundMessage

SECTION_TEXT_LIMIT = 3000
"""Characters of mrkdwn in one ``section`` block."""
CONTEXT_ELEMENTS_LIMIT = 10
ACTIONS_ELEMENTS_LIMIT = 25
BUTTON_LABEL_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
METADATA_EVENT_TYPE = "switchboard_reply"
"""``metadata.event_type`` of every message the channel posts (Slack message metadata)."""
STREAMING_BLOCK_ID = "switchboard.streaming"
"""``block_id`` of the context block that marks an answer still being written."""
STREAMING_NOTE = "_writing…_"

_MD = MarkdownIt("commonmark").enable("strikethrough")
_FENCE = "```"


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` for mrkdwn (Slack decodes only these three)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _inline(node: SyntaxTreeNode) -> str:
    parts: list[str] = []
    for child in node.children:
        t = child.type
        if t == "text":
            parts.append(escape(child.content))
        elif t in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif t == "strong":
            parts.append(f"*{_inline(child)}*")
        elif t == "em":
            parts.append(f"_{_inline(child)}_")
        elif t == "s":
            parts.append(f"~{_inline(child)}~")
        elif t == "code_inline":
            parts.append(f"`{escape(child.content)}`")
        elif t == "link":
            href = escape(str(child.attrs.get("href", "")))
            label = _inline(child).replace("|", "¦")
            parts.append(f"<{href}>" if not label or label == href else f"<{href}|{label}>")
        elif t == "image":
            src = escape(str(child.attrs.get("src", "")))
            alt = escape(child.content).replace("|", "¦")
            parts.append(f"<{src}|{alt}>" if alt else f"<{src}>")
        elif t in ("html_inline", "html_block"):
            parts.append(escape(child.content))
        else:
            parts.append(_inline(child) if child.children else escape(child.content))
    return "".join(parts)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.split("\n"))


def _block(node: SyntaxTreeNode) -> str:
    t = node.type
    if t == "paragraph":
        return _inline(node.children[0]) if node.children else ""
    if t == "inline":
        return _inline(node)
    if t == "heading":
        inner = _inline(node.children[0]) if node.children else ""
        return f"*{inner}*" if inner else ""
    if t in ("bullet_list", "ordered_list"):
        start = int(str(node.attrs.get("start", 1))) if t == "ordered_list" else 1
        items: list[str] = []
        for i, item in enumerate(node.children):
            marker = "•" if t == "bullet_list" else f"{start + i}."
            body = "\n".join(b for b in (_block(c) for c in item.children) if b)
            first, _, rest = body.partition("\n")
            text = f"{marker} {first}"
            if rest:
                text += "\n" + _indent(rest, "    ")
            items.append(text)
        return "\n".join(items)
    if t == "blockquote":
        inner = "\n\n".join(b for b in (_block(c) for c in node.children) if b)
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
    if t in ("fence", "code_block"):
        return f"{_FENCE}\n{escape(node.content.rstrip(chr(10)))}\n{_FENCE}"
    if t == "hr":
        return "───"
    if t == "html_block":
        return escape(node.content.rstrip("\n"))
    return "\n\n".join(b for b in (_block(c) for c in node.children) if b)


def to_mrkdwn(markdown: str) -> str:
    """Render CommonMark as Slack mrkdwn.

    Headings become bold lines, lists ``•``/``1.`` lines (nested ones indented), block quotes
    ``>`` lines (the one unescaped ``>``), code blocks triple-backtick blocks; text is escaped
    (see :func:`escape`).

    Args:
        markdown: CommonMark text (the hub's ``OutboundMessage.text``).

    Returns:
        mrkdwn text without trailing blank lines.
    """
    tree = SyntaxTreeNode(_MD.parse(markdown))
    return _block(tree).strip("\n")


def split_mrkdwn(text: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Split mrkdwn into pieces of at most ``limit`` characters.

    Splits at blank lines, then line ends, then spaces; a code block cut in two is closed at
    the end of one piece and reopened at the start of the next.

    Returns:
        The pieces in order (one piece when ``text`` fits; ``[""]`` for empty text).
    """
    if len(text) <= limit:
        return [text]
    closing = f"\n{_FENCE}"
    pieces: list[str] = []
    rest = text
    in_fence = False
    while rest:
        prefix = f"{_FENCE}\n" if in_fence else ""
        if len(prefix) + len(rest) <= limit:
            pieces.append(prefix + rest)
            break
        room = limit - len(prefix) - len(closing)
        cut = -1
        for sep in ("\n\n", "\n", " "):
            cut = rest.rfind(sep, 0, room)
            if cut > 0:
                break
        if cut <= 0:
            cut = room
        head = rest[:cut]
        rest = rest[cut:]
        rest = rest.lstrip("\n") if rest.startswith("\n") else rest.removeprefix(" ")
        open_after = in_fence != (head.count(_FENCE) % 2 == 1)
        piece = prefix + head.rstrip("\n")
        if open_after:
            piece += closing
        pieces.append(piece)
        in_fence = open_after
    return pieces


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """One ``chat.postMessage`` call: fallback ``text``, ``blocks`` and ``metadata``."""

    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)


def _citations_block(out: OutboundMessage) -> dict[str, Any] | None:
    elements: list[dict[str, Any]] = []
    for c in out.citations[:CONTEXT_ELEMENTS_LIMIT]:
        title = escape(c.title or c.doc_id).replace("|", "¦")
        text = f"<{escape(c.url)}|{title}>" if c.url else title
        elements.append({"type": "mrkdwn", "text": f":page_facing_up: {text}"})
    if not elements:
        return None
    return {"type": "context", "block_id": "switchboard.citations", "elements": elements}


def _actions_block(out: OutboundMessage) -> dict[str, Any] | None:
    buttons = [
        {
            "type": "button",
            "action_id": a.id,
            "text": {"type": "plain_text", "text": a.label[:BUTTON_LABEL_LIMIT], "emoji": True},
            "value": str(out.session_key)[:BUTTON_VALUE_LIMIT],
        }
        for a in out.actions[:ACTIONS_ELEMENTS_LIMIT]
    ]
    if not buttons:
        return None
    return {"type": "actions", "block_id": "switchboard.actions", "elements": buttons}


def build_messages(out: OutboundMessage) -> list[SlackMessage]:
    """The Slack messages that carry one outbound message.

    The text is rendered (:func:`to_mrkdwn`), prefixed with the agent's name for human-agent
    replies, and split into messages of one ``section`` block each (:func:`split_mrkdwn`). The
    last message also carries the citations (a ``context`` block) and the buttons (an
    ``actions`` block). Every message carries Slack message metadata
    (``event_type`` :data:`METADATA_EVENT_TYPE`) naming its session, kind, ``reply_to``,
    idempotency key, part number and the citations' document ids.

    Returns:
        At least one message.
    """
    body = to_mrkdwn(out.text)
    if out.kind == OutboundKind.AGENT and out.author:
        body = f"*{escape(out.author)}:* {body}"
    chunks = split_mrkdwn(body) if body else [""]
    messages: list[SlackMessage] = []
    for i, chunk in enumerate(chunks):
        blocks: list[dict[str, Any]] = []
        if chunk:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
        last = i == len(chunks) - 1
        if last:
            for extra in (_citations_block(out), _actions_block(out)):
                if extra is not None:
                    blocks.append(extra)
        payload: dict[str, Any] = {
            "session_key": str(out.session_key),
            "kind": str(out.kind),
            "reply_to": out.reply_to,
            "idempotency_key": out.idempotency_key,
            "part": i,
            "parts": len(chunks),
        }
        if last and out.citations:
            payload["citations"] = [
                {"doc_id": c.doc_id, "title": c.title, "score": c.score}
                | ({"url": c.url} if c.url else {})
                for c in out.citations
            ]
        messages.append(
            SlackMessage(
                text=chunk or out.text[:SECTION_TEXT_LIMIT] or " ",
                blocks=blocks,
                metadata={
                    "event_type": METADATA_EVENT_TYPE,
                    "event_payload": {k: v for k, v in payload.items() if v is not None},
                },
            )
        )
    return messages


def build_partial(out: OutboundMessage) -> SlackMessage:
    """The Slack message that shows an answer still being written (a streamed answer).

    The text so far is rendered like :func:`build_messages` renders it, but only its first part
    is shown (the part the final answer will edit; the others are posted with the final
    answer), followed by a ``context`` block (``block_id`` :data:`STREAMING_BLOCK_ID`) saying
    the answer is being written. No citations and no buttons: they come with the final answer.
    The metadata payload carries ``partial: true``.
    """
    body = to_mrkdwn(out.text)
    first = split_mrkdwn(body)[0] if body else ""
    blocks: list[dict[str, Any]] = []
    if first:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": first}})
    blocks.append(
        {
            "type": "context",
            "block_id": STREAMING_BLOCK_ID,
            "elements": [{"type": "mrkdwn", "text": STREAMING_NOTE}],
        }
    )
    payload: dict[str, Any] = {
        "session_key": str(out.session_key),
        "kind": str(out.kind),
        "reply_to": out.reply_to,
        "idempotency_key": out.idempotency_key,
        "partial": True,
    }
    return SlackMessage(
        text=first or " ",
        blocks=blocks,
        metadata={
            "event_type": METADATA_EVENT_TYPE,
            "event_payload": {k: v for k, v in payload.items() if v is not None},
        },
    )
