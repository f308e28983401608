"""Replies as RFC 5322 messages, threaded into the customer's conversation.

:func:`render_reply` builds ``multipart/alternative`` text + HTML (CommonMark rendered by
markdown-it-py), ``In-Reply-To``/``References`` and a ``Re:`` subject so clients thread it
(RFC 5322 §3.6.4), and ``Auto-Submitted: auto-replied`` (RFC 3834) on everything the bot wrote.
Sources and actions go below an RFC 3676 signature line.
"""

from __future__ import annotations

import hashlib
import html
import re
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from markdown_it import MarkdownIt

from bot.envelope import TALK_TO_HUMAN, OutboundKind, OutboundMessage
from channels.email.translate import ThreadInfo

MAX_REFERENCES = 20
"""At most this many ids in an outbound ``References`` (the root and the newest ones)."""

SIGNATURE_SEPARATOR = "\n\n-- \n"
"""Between the reply text and its footer (sources, actions): the RFC 3676 signature line."""

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})


def outbound_message_id(domain: str, idempotency_key: str | None) -> str:
    """A ``<...@domain>`` id: stable for an idempotency key (a retried send repeats it)."""
    if idempotency_key:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        return f"<sb.{digest}@{domain}>"
    return make_msgid("sb", domain=domain)


def reply_subject(subject: str) -> str:
    """``Re: <subject>`` (not doubled); ``Re: Your message`` when the subject is empty."""
    subject = " ".join(subject.split())
    if not subject:
        return "Re: Your message"
    if re.match(r"(?i)^(re|aw|sv|antw)\s*:", subject):
        return subject
    return f"Re: {subject}"


def _footer_plain(out: OutboundMessage) -> str:
    lines: list[str] = []
    if out.actions:
        lines.append(_actions_hint(out))
    if out.citations:
        lines.append("Sources:")
        for n, c in enumerate(out.citations, start=1):
            lines.append(f"[{n}] {c.title}" + (f" <{c.url}>" if c.url else ""))
    return "\n".join(lines)


def _actions_hint(out: OutboundMessage) -> str:
    labels = [a.label for a in out.actions if a.id != TALK_TO_HUMAN.id]
    parts = []
    if any(a.id == TALK_TO_HUMAN.id for a in out.actions):
        parts.append("To talk to a person, reply and ask for a person.")
    if labels:
        parts.append("You can reply with: " + ", ".join(labels) + ".")
    return " ".join(parts)


def _footer_html(out: OutboundMessage) -> str:
    chunks: list[str] = []
    if out.actions:
        chunks.append(f"<p>{html.escape(_actions_hint(out))}</p>")
    if out.citations:
        items = []
        for c in out.citations:
            doc = html.escape(c.doc_id, quote=True)
            title = html.escape(c.title)
            if c.url:
                href = html.escape(c.url, quote=True)
                items.append(f'<li><a href="{href}" data-doc-id="{doc}">{title}</a></li>')
            else:
                items.append(f'<li><span data-doc-id="{doc}">{title}</span></li>')
        chunks.append("<p>Sources:</p>\n<ol>\n" + "\n".join(items) + "\n</ol>")
    return "\n".join(chunks)


def render_reply(
    out: OutboundMessage,
    thread: ThreadInfo,
    *,
    from_address: str,
    from_name: str,
    now: datetime | None = None,
) -> EmailMessage:
    """Build the reply e-mail for ``out`` inside the customer's thread.

    Args:
        out: the outbound message (CommonMark text, citations, actions, kind).
        thread: the customer's address, subject and the thread's message ids.
        from_address: our support address.
        from_name: the display name of the sender (bot or human agent).
        now: the ``Date`` (default: now, UTC).

    Returns:
        A ``multipart/alternative`` message (text/plain, then text/html) with ``Message-ID``
        (stable for ``out.idempotency_key``), ``In-Reply-To``, ``References`` and a ``Re:``
        subject; bot messages carry ``Auto-Submitted: auto-replied`` and
        ``X-Auto-Response-Suppress: All``; ``X-Switchboard-Kind`` names the kind.
    """
    domain = from_address.rsplit("@", 1)[-1]
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=from_name, addr_spec=from_address)
    msg["To"] = Address(display_name=thread.customer_name or "", addr_spec=thread.customer)
    msg["Subject"] = reply_subject(thread.subject)
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = outbound_message_id(domain, out.idempotency_key)
    parent = out.reply_to or thread.last_message_id
    refs = list(thread.references)
    if parent and parent not in refs:
        refs.append(parent)
    if len(refs) > MAX_REFERENCES:
        refs = refs[:1] + refs[-(MAX_REFERENCES - 1) :]
    if parent:
        msg["In-Reply-To"] = f"<{parent}>"
    if refs:
        msg["References"] = " ".join(f"<{r}>" for r in refs)
    if out.kind != OutboundKind.AGENT:
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Switchboard-Kind"] = str(out.kind)

    footer = _footer_plain(out)
    plain = out.text.rstrip() + (SIGNATURE_SEPARATOR + footer if footer else "") + "\n"
    body_html = _markdown.render(out.text)
    footer_html = _footer_html(out)
    if footer_html:
        body_html += "<hr>\n" + footer_html
    msg.set_content(plain)
    msg.add_alternative(
        f"<!DOCTYPE html>\n<html><body>\n{body_html}\n</body></html>\n", subtype="html"
    )
    return msg
