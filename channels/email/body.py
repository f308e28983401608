"""The text and the attachments of an RFC 5322 message (MIME parts, HTML, quoted history).

The body is the ``text/plain`` alternative when there is one, else the HTML turned into text
(BeautifulSoup, quoted blocks of Gmail, Outlook, Thunderbird and Yahoo removed). Quoted history
and reply headers ("On ... wrote:", Android's ``... пользователь "x" <x> написал:``, a reply
written below the quote as Thunderbird does) are removed by Mailgun's ``talon``; signatures and
the reply headers of the languages in :data:`REPLY_LANGUAGES` by ``mail-parser-reply``.
Attachments are parts with a file name or a non-text type, and forwarded ``message/rfc822``
parts.

Sources: RFC 2045/2046 (MIME), RFC 2183 (``Content-Disposition``), RFC 2231 (file names).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage, Message

from bs4 import BeautifulSoup, Tag
from mailparser_reply.parser import EmailMessage as ReplyText
from talon import quotations

log = logging.getLogger(__name__)

REPLY_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pl", "sv", "da", "cs"]
"""Languages whose reply headers ("On ... wrote:", "Am ... schrieb") are recognized."""

HEADER_ERRORS = (ValueError, IndexError, TypeError, LookupError, AttributeError)
"""What the standard library raises on headers it cannot parse (values are read raw then)."""
_BLOCKS = ("p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "ul")


def clean_text(value: str) -> str:
    """``value`` as valid Unicode, storable as JSON.

    Raw 8-bit bytes kept by the parser (surrogate escapes) are decoded as UTF-8; undecodable
    ones become U+FFFD.
    """
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def part_text(part: Message) -> str:
    """The text of a ``text/*`` part, decoding legacy and unknown charsets as well as it can."""
    if isinstance(part, EmailMessage):
        try:
            content = part.get_content()
            if isinstance(content, str):
                return content
        except (LookupError, UnicodeError, ValueError, KeyError, AssertionError):
            pass
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    for candidate in (charset, "utf-8", "cp1252"):
        try:
            return raw.decode(candidate)
        except (LookupError, UnicodeError):
            continue
    return raw.decode("latin-1")


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body without quoted history (blockquotes, Gmail/Outlook quotes).

    Block elements end lines, ``<br>`` breaks them; whitespace inside lines is collapsed.
    """
    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "head", "title", "blockquote"]):
        tag.decompose()
    for tag in soup.select(".gmail_quote, .moz-cite-prefix, .yahoo_quoted"):
        tag.decompose()
    outlook = soup.find(id="divRplyFwdMsg") or soup.find(id="appendonsend")
    if isinstance(outlook, Tag):
        for sibling in list(outlook.find_next_siblings()):
            if isinstance(sibling, Tag):
                sibling.decompose()
        outlook.decompose()
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for block in soup.find_all(_BLOCKS):
        block.append("\n")
    lines = [" ".join(line.split()) for line in soup.get_text().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def strip_quoted(text: str) -> str:
    """The new reply of a plain-text body: quoted history, reply headers and signature removed.

    Two libraries, each for what it does best: talon (Mailgun's quotation extractor) marks each
    line as quote, splitter ("On ... wrote:", "-----Original Message-----", localized and
    Android headers) or text and keeps the text whether it stands above or below the quote;
    ``mail-parser-reply`` then removes the signature and any reply header talon does not know
    (hyphen lists are kept, not taken for signatures). talon reads at most its first
    ``MAX_LINES_COUNT`` lines and drops the rest, so a longer body skips it; a body talon
    fails on (it is old code, and this is untrusted input) goes on without it rather than
    failing the message. When nothing would remain (a message that is only a quote), the text
    is returned whole.
    """
    text = text.replace("\r\n", "\n")
    reply = text
    if text.count("\n") < quotations.MAX_LINES_COUNT:
        try:
            reply = quotations.extract_from_plain(text) or text
        except Exception as exc:  # never lose a customer's mail to the quotation heuristics
            log.warning("email.quotation_extraction_failed", extra={"error": type(exc).__name__})
    replies = ReplyText(text=reply, languages=REPLY_LANGUAGES, keep_hyphen_lists=True).read()
    body = replies.replies[0].body.strip() if replies.replies else ""
    return body or reply.strip() or text.strip()


def leaves(part: Message) -> Iterator[Message]:
    """Non-multipart parts in order; ``message/*`` parts are leaves (not descended into)."""
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    yield from leaves(sub)
        return
    yield part


def body_part(msg: EmailMessage) -> Message | None:
    """The part holding the text: the plain alternative, else HTML, else the first text leaf."""
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
    except HEADER_ERRORS:
        body = None
    if body is not None:
        return body
    for part in leaves(msg):
        if part.get_content_maintype() == "text" and part.get_content_disposition() is None:
            return part
    return None


def is_attachment(part: Message, body: Message | None) -> bool:
    """True for a leaf other than ``body`` that is an attachment, named or not text."""
    if part is body:
        return False
    if part.get_content_disposition() == "attachment":
        return True
    try:
        named = part.get_filename() is not None
    except HEADER_ERRORS:
        named = False
    return named or part.get_content_maintype() not in ("text", "multipart")


def attachment_bytes(part: Message) -> bytes:
    """The decoded bytes of an attachment; a ``message/*`` part as the whole inner message."""
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return inner[0].as_bytes(policy=policy.default)
        if isinstance(inner, str):
            return inner.encode("utf-8", "replace")
        return b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def attachment_name(part: Message, index: int) -> str:
    """The file name (``message-N.eml`` / ``attachment-N`` when it has none; N from 1)."""
    try:
        name = part.get_filename()
    except HEADER_ERRORS:
        name = None
    if name:
        return clean_text(" ".join(str(name).split()))
    if part.get_content_type() == "message/rfc822":
        return f"message-{index}.eml"
    return f"attachment-{index}"


def truncate(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, ending in ``...`` when cut."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode("utf-8", "ignore") + "..."
