"""Pure functions: RFC 5322 messages to envelopes (replies: :mod:`channels.email.render`).

Inbound (:func:`parse_email`): the standard library's :mod:`email` package with
``policy.default`` parses the bytes and tolerates defects (they are listed in ``raw``). The text
and the attachments are found by :mod:`channels.email.body` (the plain or HTML alternative,
quoted history and signatures removed). Attachments are kept as
:class:`~bot.envelope.Attachment` with a content-addressed reference ``sha256:<hex>``; their bytes
are returned beside the envelope for the channel to store.

Threads: the session key is ``email:{mailbox}:dm:{sender}:thread:{root}``, where ``root`` is the
first id of ``References`` (RFC 5322 §3.6.4), else the ``In-Reply-To`` id, else the message's own
``Message-ID``. The event id is the ``Message-ID`` without angle brackets (a SHA-256 of the bytes
when it is missing).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from bot.channel import Ignored, Parsed, ParseResult
from bot.config import Settings
from bot.envelope import Attachment, InboundMessage, Participant, SessionKey, session_key
from bot.errors import PayloadInvalid, PayloadTooLarge
from bot.payload import rejects_malformed
from channels.email.body import (
    HEADER_ERRORS,
    attachment_bytes,
    attachment_name,
    body_part,
    clean_text,
    html_to_text,
    is_attachment,
    leaves,
    part_text,
    strip_quoted,
    truncate,
)
from channels.email.verify import loop_reason, sender_verified

CHANNEL = "email"
DEFAULT_MAILBOX = "default"
"""The account of envelopes parsed without ``SWITCHBOARD_EMAIL_ADDRESS``."""

_MSGID = re.compile(r"<([^<>\s]+)>")


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


# --- headers ------------------------------------------------------------------------------------
def _header(msg: Message, name: str) -> str | None:
    """A header as decoded text (RFC 2047 words decoded), tolerant of unparsable values."""
    try:
        value = msg.get(name)
    except HEADER_ERRORS:
        value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    if value is None:
        return None
    return clean_text(" ".join(str(value).split()))


def _sender(msg: EmailMessage) -> tuple[str, str | None]:
    """``(address lower case, display name)`` of ``From``.

    Raises:
        PayloadInvalid: when there is no usable ``From`` address.
    """
    try:
        header = msg["From"]
        addresses = list(getattr(header, "addresses", ()))
    except HEADER_ERRORS as exc:
        raise PayloadInvalid("unparsable From header", field="From") from exc
    for addr in addresses:
        if addr.username and addr.domain:
            address = clean_text(f"{addr.username}@{addr.domain}".lower())
            return address, clean_text(addr.display_name) if addr.display_name else None
    raise PayloadInvalid("no sender address in the From header", field="From")


def _sent_at(msg: EmailMessage) -> datetime | None:
    try:
        when = getattr(msg["Date"], "datetime", None)
    except HEADER_ERRORS:
        return None
    if not isinstance(when, datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


# --- inbound ------------------------------------------------------------------------------------
@rejects_malformed("email")
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

    body = body_part(msg)
    text = ""
    if body is not None:
        text = part_text(body)[:200_000]
        if body.get_content_subtype() == "html":
            text = html_to_text(text)
        text = strip_quoted(clean_text(text))

    attachments: list[Attachment] = []
    payloads: dict[str, bytes] = {}
    for index, part in enumerate(leaves(msg), start=1):
        if not is_attachment(part, body):
            continue
        content = attachment_bytes(part)
        name = attachment_name(part, index)
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
        text=truncate(text, max_text_bytes),
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
