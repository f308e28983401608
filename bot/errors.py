"""The one error hierarchy of Switchboard.

Every error the hub raises on purpose derives from :class:`SwitchboardError`. Subclasses carry
the data a caller needs to recover (how long to wait, which tool failed). Plugins convert SDK
exceptions into these at their boundary; the core never imports an SDK's errors.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


class SwitchboardError(Exception):
    """Root of every error Switchboard raises on purpose."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigError(SwitchboardError):
    """The configuration is invalid or inconsistent (raised at start-up)."""


class PayloadInvalid(SwitchboardError):
    """A platform payload or API body is malformed.

    Attributes:
        field: dotted path of the offending field, when one can be named.
        status: the HTTP status a server answers with (400 by default, 413 when too large).
    """

    def __init__(self, message: str, *, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status

    def __repr__(self) -> str:
        return f"PayloadInvalid({str(self)!r}, field={self.field!r}, status={self.status})"


class PayloadTooLarge(PayloadInvalid):
    """A payload exceeds a configured size limit (HTTP 413)."""

    def __init__(self, message: str, *, limit_bytes: int, field: str | None = None) -> None:
        super().__init__(message, field=field, status=413)
        self.limit_bytes = limit_bytes


class SignatureInvalid(SwitchboardError):
    """A webhook signature, secret token or JWT did not verify (HTTP 401)."""


class Unauthorized(SwitchboardError):
    """A request lacks valid credentials (HTTP 401)."""


class Forbidden(SwitchboardError):
    """The caller is known but not allowed to do this (HTTP 403)."""


class NotFound(SwitchboardError):
    """The named conversation, ticket or agent does not exist (HTTP 404)."""


class Conflict(SwitchboardError):
    """The request conflicts with the current state, e.g. claiming a claimed session (409)."""


class RateLimited(SwitchboardError):
    """A platform or the LLM asked us to slow down.

    Attributes:
        retry_after: seconds to wait before retrying.
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"RateLimited({str(self)!r}, retry_after={self.retry_after})"


def parse_retry_after(value: str | None, *, default: float, now: float | None = None) -> float:
    """The wait a ``Retry-After`` header asks for, in seconds (RFC 9110 section 10.2.3).

    Args:
        value: delay-seconds (``"30"``) or an HTTP-date; None, blank or garbage gives ``default``.
        default: seconds to wait when the header says nothing usable.
        now: the current Unix time (tests); the clock when None.

    Returns:
        Seconds to wait, at least 0.
    """
    if not value or not value.strip():
        return default
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ChannelUnavailable(SwitchboardError):
    """A channel's platform cannot be reached right now; the send may be retried."""


class BackendUnavailable(SwitchboardError):
    """A storage or queue backend (database, Redis) cannot be reached (HTTP 503)."""


class LaneFull(SwitchboardError):
    """Raised only by backends that refuse rather than summarize overflow (never by memory)."""


class Draining(SwitchboardError):
    """The hub is shutting down and accepts no new messages (HTTP 503)."""


class ToolFailed(SwitchboardError):
    """An agent tool failed.

    Attributes:
        tool: the tool's name.
        cause: the underlying exception, if any.
    """

    def __init__(self, tool: str, cause: BaseException | str) -> None:
        super().__init__(f"tool {tool!r} failed: {cause}")
        self.tool = tool
        self.cause = cause

    def __repr__(self) -> str:
        return f"ToolFailed(tool={self.tool!r}, cause={self.cause!r})"


class LLMUnavailable(SwitchboardError):
    """Every configured model failed or timed out for this turn."""
