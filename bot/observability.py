"""Metrics (Prometheus) and structured JSON logs.

Metrics live in one :class:`Metrics` object per hub (own ``CollectorRegistry``, so tests can build
many hubs in one process). Logs are JSON lines with the event name in ``event`` and the fields
passed through ``extra=`` (``session_key``, ``event_id``, ``channel``...).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_STD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class Metrics:
    """The hub's Prometheus metrics.

    Attributes:
        messages_in: customer messages accepted, by channel.
        messages_out: messages delivered to customers, by channel and kind.
        duplicates: repeated events ignored, by channel.
        lane_depth: messages waiting in lanes (sampled at scrape time).
        lanes: sessions holding a lane.
        active_turns: turns running now.
        turn_seconds: turn latency histogram (seconds, from turn start to last reply stored).
        hub_latency_seconds: ingest-to-delivery latency of answers (seconds).
        escalations: sessions escalated to humans, by reason.
        turn_failures: turns that raised, by error type.
        send_failures: deliveries that failed after retries, by channel.
        outbox_deferred: outbound messages put in the outbox (platform down, or queued behind
            a session's earlier entries), by channel.
        send_abandoned: outbox entries given up after ``outbox_max_age_s``, by channel.
        outbox_depth: entries waiting in the outbox (set by each pass of the outbox loop).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "switchboard_messages_in_total", "Customer messages accepted.", ["channel"], registry=r
        )
        self.messages_out = Counter(
            "switchboard_messages_out_total",
            "Messages delivered to customers.",
            ["channel", "kind"],
            registry=r,
        )
        self.duplicates = Counter(
            "switchboard_duplicate_events_total",
            "Repeated events ignored.",
            ["channel"],
            registry=r,
        )
        self.lane_depth = Gauge("switchboard_lane_depth", "Messages waiting in lanes.", registry=r)
        self.lanes = Gauge("switchboard_lanes", "Sessions holding a lane.", registry=r)
        self.active_turns = Gauge("switchboard_active_turns", "Turns running now.", registry=r)
        self.turn_seconds = Histogram(
            "switchboard_turn_seconds",
            "Turn latency in seconds.",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.hub_latency_seconds = Histogram(
            "switchboard_hub_latency_seconds",
            "Seconds from ingest of a customer message to delivery of its answer.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        self.escalations = Counter(
            "switchboard_escalations_total",
            "Sessions escalated to humans.",
            ["reason"],
            registry=r,
        )
        self.turn_failures = Counter(
            "switchboard_turn_failures_total", "Turns that failed.", ["error"], registry=r
        )
        self.send_failures = Counter(
            "switchboard_send_failures_total",
            "Deliveries that failed after retries.",
            ["channel"],
            registry=r,
        )

        self.outbox_deferred = Counter(
            "switchboard_outbox_deferred_total",
            "Outbound messages put in the outbox.",
            ["channel"],
            registry=r,
        )
        self.send_abandoned = Counter(
            "switchboard_send_abandoned_total",
            "Outbox entries given up after outbox_max_age_s.",
            ["channel"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "switchboard_outbox_depth", "Outbound messages waiting in the outbox.", registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def format_exception_safely(exc: BaseException | None) -> str:
    """A traceback without exception messages: frames and exception types only.

    Exception messages may quote what was being processed (a customer's text, a validation
    error's input, a provider's echo of the request), so logs show where and what, never the
    message. Causes and contexts are included, oldest first, as Python prints them.

    Args:
        exc: the exception (None gives "").

    Returns:
        Lines of ``Traceback (most recent call last):``, the frames, then
        ``module.Type (message withheld)``.
    """
    chain: list[BaseException] = []
    current = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__suppress_context__:
            current = None
        else:
            current = current.__context__
    parts: list[str] = []
    for item in reversed(chain):
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_list(traceback.extract_tb(item.__traceback__)))
        kind = type(item)
        parts.append(f"{kind.__module__}.{kind.__qualname__} (message withheld)\n")
    return "".join(parts)


_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_PSEUDONYM_KEY = secrets.token_bytes(16)


def scrub_emails(value: Any) -> Any:
    """``value`` with every e-mail address replaced by ``<email:…>``, a keyed digest.

    Log fields carry identifiers, not text, but some identifiers hold an address: an e-mail
    conversation's session key (``email:support@shop.example:dm:ana@example.org:thread:…``), an
    SMTP error naming a refused recipient. The digest (HMAC-SHA-256 under a key drawn at process
    start, 10 hex digits, of the lower-cased address) is the same for one address throughout a
    process, so a conversation's lines still match each other, and cannot be reversed by
    hashing guessed addresses. Strings, and lists, tuples and dict values of strings, are
    scrubbed; anything else is returned as it is.
    """
    if isinstance(value, str):
        if "@" not in value:
            return value
        return _EMAIL.sub(_pseudonym, value)
    if isinstance(value, list | tuple):
        return [scrub_emails(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub_emails(v) for k, v in value.items()}
    return value


def _pseudonym(match: re.Match[str]) -> str:
    digest = hmac.new(_PSEUDONYM_KEY, match.group(0).lower().encode(), hashlib.sha256)
    return f"<email:{digest.hexdigest()[:10]}>"


class PlainFormatter(logging.Formatter):
    """Plain-text lines whose tracebacks leave out exception messages."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` (e-mail addresses pseudonymized), never reusing a cached traceback."""
        cached, record.exc_text = record.exc_text, None
        try:
            return str(scrub_emails(super().format(record)))
        finally:
            record.exc_text = cached

    def formatException(self, ei: Any) -> str:
        """The traceback of ``ei`` without messages (:func:`format_exception_safely`)."""
        return format_exception_safely(ei[1]).rstrip("\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line.

    Keys: ``ts``, ``level``, ``logger``, ``event``, the record's extra fields (e-mail addresses
    in them pseudonymized: :func:`scrub_emails`), and ``exc`` with the traceback when an
    exception is attached (exception messages withheld: :func:`format_exception_safely`).
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = scrub_emails(value)
        if record.exc_info:
            out["exc"] = format_exception_safely(record.exc_info[1])
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Send logs to stderr, as JSON lines or plain text; quiet noisy libraries."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("LiteLLM", "litellm", "httpx", "httpcore", "aiohttp.access", "qdrant_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
