"""Pure functions: RFC 5322 messages to envelopes, and replies to RFC 5322 messages.

Inbound (:func:`parse_email`): the standard library's :mod:`email` package with
``policy.default`` parses the bytes and tolerates defects (they are listed in ``raw``). The body
is the ``text/plain`` alternative when there is one, else the HTML turned into text
(BeautifulSoup). Quoted history and reply headers ("On ... wrote:", Android's
``... пользователь "x" <x> написал:``, a reply written below the quote as Thunderbird does) are
removed by Mailgun's ``talon``; signatures and the reply headers of the languages in
:data:`REPLY_LANGUAGES` by ``mail-parser-reply``. Attachments (parts with a file name or a
non-text type, and forwarded ``message/rfc822`` parts) are kept as
:class:`~bot.envelope.Attachment` with a content-addressed reference ``sha256:<hex>``; their bytes
are returned beside the envelope for the channel to store.

Threads: the session key is ``email:{mailbox}:dm:{sender}:thread:{root}``, where ``root`` is the
first id of ``References`` (RFC 5322 §3.6.4), else the ``In-Reply-To`` id, else the message's own
``Message-ID``. The event id is the ``Message-ID`` without angle brackets (a SHA-256 of the bytes
when it is missing).

Outbound (:func:`render_reply`): ``multipart/alternative`` text + HTML (CommonMark rendered by
markdown-it-py), ``In-Reply-To``/``References`` and a ``Re:`` subject so clients thread it,
``Auto-Submitted: auto-replied`` (RFC 3834) on everything the bot wrote.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from typing import Any

from bs4 import BeautifulSoup, Tag
from mailparser_reply.parser import EmailMessage as ReplyText
from markdown_it import MarkdownIt
from talon import quotations

from bot.channel import Ignored, Parsed, ParseResult
from bot.config import Settings
from bot.envelope import (
    TALK_TO_HUMAN,
    Attachment,
    InboundMessage,
    OutboundKind,
    OutboundMessage,
    Participant,
    SessionKey,
    session_key,
)
from bot.errors import PayloadInvalid, PayloadTooLarge
from channels.email.verify import loop_reason, sender_verified

CHANNEL = "email"
DEFAULT_MAILBOX = "default"
"""The account of envelopes parsed without ``SWITCHBOARD_EMAIL_ADDRESS``."""

REPLY_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pl", "sv", "da", "cs"]
"""Languages whose reply headers ("On ... wrote:", "Am ... schrieb") are recognized."""

MAX_REFERENCES = 20
"""At most this many ids in an outbound ``References`` (the root and the newest ones)."""

SIGNATURE_SEPARATOR = "\n\n-- \n"
"""Between the reply text and its footer (sources, actions): the RFC 3676 signature line."""

_MSGID = re.compile(r"<([^<>\s]+)>")
_BLOCKS = ("p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "ul")
_HEADER_ERRORS = (ValueError, IndexError, TypeError, LookupError, AttributeError)
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})


@dataclass(frozen=True, slots=True)
class ParsedEmail:
    """What :func:`parse_email` found.

    Attributes:
        result: the envelope, or why the message is deliberately not answered.
        payloads: attachment bytes by their ``Attachment.ref`` (``sha256:<hex>``).
    """

    result: ParseResult
    payloads: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """What a reply needs to reach the customer inside their thread.

    Attributes:
        customer: the customer's address (lower case).
        customer_name: their display name, if any.
        subject: the subject of their last message.
        references: the thread's message ids, oldest first, without angle brackets.
        last_message_id: the id of their last message.
    """

    customer: str
    customer_name: str | None
    subject: str
    references: tuple[str, ...]
    last_message_id: str | None

    def to_meta(self) -> dict[str, Any]:
        """JSON-serializable form for conversation meta."""
        return {
            "customer": self.customer,
            "customer_name": self.customer_name,
            "subject": self.subject,
            "references": list(self.references),
            "last_message_id": self.last_message_id,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ThreadInfo:
        """The inverse of :meth:`to_meta`."""
        return cls(
            customer=str(meta["customer"]),
            customer_name=meta.get("customer_name"),
            subject=str(meta.get("subject", "")),
            references=tuple(str(r) for r in meta.get("references", ())),
            last_message_id=meta.get("last_message_id"),
        )


# --- ids and keys -------------------------------------------------------------------------------
def msgid_list(value: str | None) -> list[str]:
    """The ``<id>`` tokens of a ``References``/``In-Reply-To``/``Message-ID`` value, in order."""
    if not value:
        return []
    found = _MSGID.findall(value)
    if not found and value.strip() and " " not in value.strip():
        found = [value.strip().strip("<>")]  # a bare id without brackets
    return found


def email_session_key(mailbox: str, sender: str, root: str) -> SessionKey:
    """``email:{mailbox}:dm:{sender}:thread:{root}`` (components escaped)."""
    return session_key(CHANNEL, mailbox, dm_peer=sender, thread=root)


def _unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%25", "%")


def parse_session_key(key: str) -> tuple[str, str, str]:
    """``(mailbox, customer address, thread root id)`` of an e-mail session key.

    Raises:
        ValueError: when ``key`` is not an e-mail DM thread key.
    """
    parts = key.split(":")
    if len(parts) != 6 or parts[0] != CHANNEL or parts[2] != "dm" or parts[4] != "thread":
        raise ValueError(f"not an e-mail thread session key: {key!r}")
    return _unescape(parts[1]), _unescape(parts[3]), _unescape(parts[5])


def outbound_message_id(domain: str, idempotency_key: str | None) -> str:
    """A ``<...@domain>`` id: stable for an idempotency key (a retried send repeats it)."""
    if idempotency_key:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        return f"<sb.{digest}@{domain}>"
    return make_msgid("sb", domain=domain)


# --- headers ------------------------------------------------------------------------------------
def _header(msg: Message, name: str) -> str | None:
    """A header as decoded text (RFC 2047 words decoded), tolerant of unparsable values."""
    try:
        value = msg.get(name)
    except _HEADER_ERRORS:
        value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    if value is None:
        return None
    return clean_text(" ".join(str(value).split()))


def clean_text(value: str) -> str:
    """``value`` as valid Unicode, storable as JSON.

    Raw 8-bit bytes kept by the parser (surrogate escapes) are decoded as UTF-8; undecodable
    ones become U+FFFD.
    """
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _sender(msg: EmailMessage) -> tuple[str, str | None]:
    """``(address lower case, display name)`` of ``From``.

    Raises:
        PayloadInvalid: when there is no usable ``From`` address.
    """
    try:
        header = msg["From"]
        addresses = list(getattr(header, "addresses", ()))
    except _HEADER_ERRORS as exc:
        raise PayloadInvalid("unparsable From header", field="From") from exc
    for addr in addresses:
        if addr.username and addr.domain:
            address = clean_text(f"{addr.username}@{addr.domain}".lower())
            return address, clean_text(addr.display_name) if addr.display_name else None
    raise PayloadInvalid("no sender address in the From header", field="From")


def _sent_at(msg: EmailMessage) -> datetime | None:
    try:
        when = getattr(msg["Date"], "datetime", None)
    except _HEADER_ERRORS:
        return None
    if not isinstance(when, datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


# --- bodies -------------------------------------------------------------------------------------
def _part_text(part: Message) -> str:
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
    ``MAX_LINES_COUNT`` lines and drops the rest, so a longer body skips it. When nothing would
    remain (a message that is only a quote), the text is returned whole.
    """
    text = text.replace("\r\n", "\n")
    reply = text
    if text.count("\n") < quotations.MAX_LINES_COUNT:
        reply = quotations.extract_from_plain(text) or text
    replies = ReplyText(text=reply, languages=REPLY_LANGUAGES, keep_hyphen_lists=True).read()
    body = replies.replies[0].body.strip() if replies.replies else ""
    return body or reply.strip() or text.strip()


def _leaves(part: Message) -> Iterator[Message]:
    """Non-multipart parts in order; ``message/*`` parts are leaves (not descended into)."""
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    yield from _leaves(sub)
        return
    yield part


def _body_part(msg: EmailMessage) -> Message | None:
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
    except _HEADER_ERRORS:
        body = None
    if body is not None:
        return body
    for part in _leaves(msg):
        if part.get_content_maintype() == "text" and part.get_content_disposition() is None:
            return part
    return None


def _is_attachment(part: Message, body: Message | None) -> bool:
    if part is body:
        return False
    if part.get_content_disposition() == "attachment":
        return True
    try:
        named = part.get_filename() is not None
    except _HEADER_ERRORS:
        named = False
    return named or part.get_content_maintype() not in ("text", "multipart")


def _attachment_bytes(part: Message) -> bytes:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return inner[0].as_bytes(policy=policy.default)
        if isinstance(inner, str):
            return inner.encode("utf-8", "replace")
        return b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _attachment_name(part: Message, index: int) -> str:
    try:
        name = part.get_filename()
    except _HEADER_ERRORS:
        name = None
    if name:
        return clean_text(" ".join(str(name).split()))
    if part.get_content_type() == "message/rfc822":
        return f"message-{index}.eml"
    return f"attachment-{index}"


def _truncate(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode("utf-8", "ignore") + "..."


# --- inbound ------------------------------------------------------------------------------------
def parse_email(
    data: bytes,
    *,
    mailbox: str,
    own_address: str | None,
    trusted_authserv_ids: Sequence[str] = (),
    max_attachment_bytes: int = 25 * 1024 * 1024,
    max_text_bytes: int = 32 * 1024,
) -> ParsedEmail:
    """Parse an RFC 5322 message into an envelope, or a deliberate rejection.

    Args:
        data: the message bytes (as fetched by IMAP or received by SMTP).
        mailbox: the support address (the session key's account).
        own_address: our address; mail from it is ignored.
        trusted_authserv_ids: authserv-ids whose ``Authentication-Results`` we believe.
        max_attachment_bytes: the largest decoded attachment accepted, in bytes.
        max_text_bytes: the extracted text is cut to this many UTF-8 bytes.

    Returns:
        ``Parsed`` (with attachment bytes) or ``Ignored`` for bounces, auto-replies, mailing
        lists, our own mail and empty messages.

    Raises:
        PayloadInvalid: no headers or no usable ``From`` address.
        PayloadTooLarge: an attachment exceeds ``max_attachment_bytes`` (status 413).
    """
    if not data.strip():
        raise PayloadInvalid("empty message")
    msg = BytesParser(policy=policy.default).parsebytes(data)
    if not isinstance(msg, EmailMessage) or not msg.keys():
        raise PayloadInvalid("not an e-mail message: no headers")
    sender, sender_name = _sender(msg)
    reason = loop_reason(msg, sender, own_address)
    if reason is not None:
        return ParsedEmail(Ignored(reason))

    own_ids = msgid_list(_header(msg, "Message-ID"))
    event_id = own_ids[0] if own_ids else f"{hashlib.sha256(data).hexdigest()[:32]}@generated"
    references = msgid_list(_header(msg, "References"))
    in_reply_to = msgid_list(_header(msg, "In-Reply-To"))
    root = (references or in_reply_to or [event_id])[0]

    body = _body_part(msg)
    text = ""
    if body is not None:
        text = _part_text(body)[:200_000]
        if body.get_content_subtype() == "html":
            text = html_to_text(text)
        text = strip_quoted(clean_text(text))

    attachments: list[Attachment] = []
    payloads: dict[str, bytes] = {}
    for index, part in enumerate(_leaves(msg), start=1):
        if not _is_attachment(part, body):
            continue
        content = _attachment_bytes(part)
        name = _attachment_name(part, index)
        if len(content) > max_attachment_bytes:
            raise PayloadTooLarge(
                f"attachment {name!r} is {len(content)} bytes; the limit is "
                f"{max_attachment_bytes} bytes",
                limit_bytes=max_attachment_bytes,
                field="attachment",
            )
        ref = "sha256:" + hashlib.sha256(content).hexdigest()
        payloads[ref] = content
        attachments.append(
            Attachment(name=name, mime_type=part.get_content_type(), size=len(content), ref=ref)
        )

    if not text and not attachments:
        return ParsedEmail(Ignored("empty message (no text and no attachments)"))
    if not text:
        text = "(attachments only: " + ", ".join(a.name for a in attachments) + ")"

    subject = _header(msg, "Subject") or ""
    from_domain = sender.rsplit("@", 1)[1]
    language = (_header(msg, "Content-Language") or "").split(",")[0].strip() or None
    raw: dict[str, Any] = {
        "message_id": event_id,
        "in_reply_to": in_reply_to,
        "references": references,
        "subject": subject,
        "from": _header(msg, "From"),
        "to": _header(msg, "To"),
        "date": _header(msg, "Date"),
        "content_type": msg.get_content_type(),
        "defects": sorted({type(d).__name__ for part in msg.walk() for d in part.defects}),
    }
    sent_at = _sent_at(msg)
    envelope = InboundMessage(
        event_id=event_id,
        channel=CHANNEL,
        account=mailbox,
        session_key=email_session_key(mailbox, sender, root),
        sender=Participant(
            id=sender,
            name=sender_name,
            email=sender,
            verified=sender_verified(msg, from_domain, list(trusted_authserv_ids)),
        ),
        text=_truncate(text, max_text_bytes),
        attachments=tuple(attachments),
        reply_to=in_reply_to[0] if in_reply_to else None,
        thread_id=root,
        locale=language,
        is_direct=True,
        raw=raw,
    )
    if sent_at is not None:
        envelope = envelope.model_copy(update={"sent_at": sent_at})
    return ParsedEmail(Parsed(envelope), payloads)


def parse_with_settings(data: bytes, settings: Settings) -> ParsedEmail:
    """:func:`parse_email` with the mailbox, trust and limits taken from ``settings``."""
    address = settings.email_address.strip().lower() if settings.email_address else None
    return parse_email(
        data,
        mailbox=address or DEFAULT_MAILBOX,
        own_address=address,
        trusted_authserv_ids=settings.email_trusted_authserv_ids,
        max_attachment_bytes=settings.email_max_attachment_bytes,
        max_text_bytes=settings.max_message_bytes,
    )


def thread_of(envelope: InboundMessage) -> ThreadInfo:
    """The reply context of a parsed customer message."""
    raw = envelope.raw
    refs = [str(r) for r in raw.get("references", [])]
    refs += [str(r) for r in raw.get("in_reply_to", []) if r not in refs]
    refs.append(envelope.event_id)
    return ThreadInfo(
        customer=envelope.sender.id,
        customer_name=envelope.sender.name,
        subject=str(raw.get("subject", "")),
        references=tuple(dict.fromkeys(refs)),
        last_message_id=envelope.event_id,
    )


# --- outbound -----------------------------------------------------------------------------------
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
