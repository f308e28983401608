"""Verification of Slack's request signatures.

Slack signs every HTTP request it sends (Events API, interactivity, slash commands) with the
app's signing secret: ``X-Slack-Signature: v0=HEX(HMAC-SHA256(secret, "v0:{ts}:{body}"))`` with
``X-Slack-Request-Timestamp: {ts}`` (Unix seconds). A request older or newer than five minutes
is refused so a captured request cannot be replayed. Source:
https://docs.slack.dev/authentication/verifying-requests-from-slack/

The HMAC and its constant-time comparison are slack-sdk's :class:`SignatureVerifier`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from slack_sdk.signature import Clock, SignatureVerifier

from bot.errors import SignatureInvalid

MAX_AGE_S = 5 * 60
"""How far (seconds) a request timestamp may be from now, either way."""

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"


class _Clock(Clock):
    """A slack-sdk clock that answers a fixed time (Unix seconds)."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def verify_request(
    signing_secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
) -> None:
    """Check a Slack request's signature and timestamp.

    Args:
        signing_secret: the app's signing secret (Basic Information → App Credentials).
        body: the raw request body, exactly as received (bytes).
        headers: the request headers (looked up case-insensitively).
        now: the current Unix time in seconds (default: the clock).

    Raises:
        SignatureInvalid: a header is missing, the timestamp is not a number or is more than
            :data:`MAX_AGE_S` seconds away from ``now``, or the signature does not match.
    """
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise SignatureInvalid("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    try:
        sent = int(timestamp)
    except ValueError:
        raise SignatureInvalid("X-Slack-Request-Timestamp is not a Unix time") from None
    clock_now = time.time() if now is None else now
    if abs(clock_now - sent) > MAX_AGE_S:
        raise SignatureInvalid("the request timestamp is outside the five-minute window")
    verifier = SignatureVerifier(signing_secret, clock=_Clock(clock_now))
    try:
        valid = verifier.is_valid(body, timestamp, signature)
    except UnicodeDecodeError:
        valid = False  # Slack signs UTF-8 text; other bytes cannot carry a valid signature
    if not valid:
        raise SignatureInvalid("the Slack request signature does not match")


def sign_request(signing_secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers Slack would send with ``body`` at ``timestamp`` (for tests and tools).

    Returns:
        ``{"X-Slack-Request-Timestamp": ..., "X-Slack-Signature": "v0=..."}``.
    """
    signature = SignatureVerifier(signing_secret).generate_signature(
        timestamp=str(timestamp), body=body
    )
    assert signature is not None
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature}
