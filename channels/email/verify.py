"""Sender identity from ``Authentication-Results`` (RFC 8601), and mail-loop checks.

A sender address is an identity only when a receiving server we trust (its authserv-id is in
``settings.email_trusted_authserv_ids``) recorded that DKIM passed with a signing domain
(``header.d``, or the domain of ``header.i``) aligned to the ``From`` domain, or that SPF passed
for an envelope sender (``smtp.mailfrom``) aligned to it. Alignment is DMARC's relaxed alignment
(RFC 7489 §3.1): both domains have the same organizational domain under the Public Suffix List.

The trusted server must remove ``Authentication-Results`` headers carrying its own authserv-id
from incoming mail (RFC 8601 §5), otherwise a sender could forge one.

Loop protection follows RFC 3834 (``Auto-Submitted``), RFC 3464 (delivery status
notifications), RFC 8098 (disposition notifications), RFC 2919 (``List-Id``) and the common
``Precedence: bulk/list/junk`` convention.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from functools import lru_cache

import authres
from publicsuffixlist import PublicSuffixList

log = logging.getLogger(__name__)

_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
_DAEMON_LOCALPARTS = frozenset({"mailer-daemon", "postmaster"})
_AUTORESPONDER_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response")
_REPORT_TYPES = {
    "delivery-status": "bounce (delivery status notification)",
    "disposition-notification": "read receipt (disposition notification)",
    "feedback-report": "abuse feedback report",
}


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registrable domain of ``domain`` (``mail.example.co.uk`` → ``example.co.uk``)."""
    domain = domain.strip().rstrip(".").lower()
    return _psl().privatesuffix(domain) or domain


def aligned(a: str, b: str) -> bool:
    """DMARC relaxed alignment: True when both domains share one organizational domain."""
    if not a or not b:
        return False
    return organizational_domain(a) == organizational_domain(b)


def _domain_of(value: str) -> str:
    return value.rsplit("@", 1)[-1].strip().strip("<>").lower()


def _header_values(msg: EmailMessage, name: str) -> list[str]:
    try:
        return [str(v) for v in msg.get_all(name, [])]
    except (ValueError, IndexError, TypeError, LookupError):
        # header parsing failed: fall back to the raw stored values
        return [str(v) for k, v in msg.raw_items() if k.lower() == name.lower()]


def sender_verified(msg: EmailMessage, from_domain: str, trusted_authserv_ids: list[str]) -> bool:
    """Whether a trusted server authenticated the ``From`` domain of ``msg``.

    Args:
        msg: the parsed message.
        from_domain: the domain of its ``From`` address.
        trusted_authserv_ids: authserv-ids of receiving servers we trust (case-insensitive);
            empty trusts nobody.

    Returns:
        True when a trusted ``Authentication-Results`` header records ``dkim=pass`` with an
        aligned ``header.d``/``header.i`` or ``spf=pass`` with an aligned ``smtp.mailfrom``.
    """
    trusted = {t.strip().lower() for t in trusted_authserv_ids if t.strip()}
    if not trusted or not from_domain:
        return False
    for value in _header_values(msg, "Authentication-Results"):
        try:
            header = authres.AuthenticationResultsHeader.parse(
                "Authentication-Results: " + " ".join(value.split())
            )
        except (authres.core.AuthResError, ValueError, IndexError):
            log.info("email.authres_unparsable", extra={"channel": "email"})
            continue
        if str(header.authserv_id).lower() not in trusted:
            continue
        for result in header.results:
            method, outcome = str(result.method).lower(), str(result.result).lower()
            if outcome != "pass":
                continue
            props = {(p.type.lower(), p.name.lower()): str(p.value) for p in result.properties}
            if method == "dkim":
                signer = props.get(("header", "d")) or _domain_of(props.get(("header", "i"), ""))
                if aligned(signer, from_domain):
                    return True
            elif method == "spf":
                mailfrom = props.get(("smtp", "mailfrom"), "")
                if mailfrom and aligned(_domain_of(mailfrom), from_domain):
                    return True
    return False


def loop_reason(msg: EmailMessage, sender: str, own_address: str | None) -> str | None:
    """Why ``msg`` must never be answered, or None when it may be.

    Args:
        msg: the parsed message.
        sender: its ``From`` address, lower case.
        own_address: our support address (mail from it is our own).

    Returns:
        A short reason: own address, auto-submitted, bounce, read receipt, mailing list...
    """
    if own_address and sender == own_address.strip().lower():
        return "from our own address"
    auto = " ".join(_header_values(msg, "Auto-Submitted")).strip().lower()
    if auto and auto.split(";")[0].strip() != "no":
        return f"auto-submitted ({auto.split(';')[0].strip()})"
    for name in _AUTORESPONDER_HEADERS:
        if _header_values(msg, name):
            return f"auto-reply ({name})"
    if msg.get_content_type() == "multipart/report":
        report_type = str(msg.get_param("report-type", "") or "").lower()
        return _REPORT_TYPES.get(report_type, f"report ({report_type or 'unknown type'})")
    return_paths = _header_values(msg, "Return-Path")
    if return_paths and return_paths[0].strip() in ("", "<>"):
        return "bounce (null Return-Path)"
    if sender.split("@", 1)[0] in _DAEMON_LOCALPARTS:
        return "bounce (mailer daemon)"
    if _header_values(msg, "List-Id"):
        return "mailing list (List-Id)"
    precedence = " ".join(_header_values(msg, "Precedence")).strip().lower()
    if precedence in _BULK_PRECEDENCE:
        return f"bulk mail (Precedence: {precedence})"
    return None
