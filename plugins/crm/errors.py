"""HTTP failures of a CRM API as :mod:`bot.errors` types (shared by the CRM backends)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from bot.errors import BackendUnavailable, RateLimited, parse_retry_after

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_S = 10.0
"""Seconds to wait after a 429 that carries no usable ``Retry-After``."""


def retry_after_s(value: str | None) -> float:
    """Seconds of a ``Retry-After`` header (:func:`bot.errors.parse_retry_after`).

    Returns:
        The delay, at least 0; :data:`DEFAULT_RETRY_AFTER_S` when absent or unreadable.
    """
    return parse_retry_after(value, default=DEFAULT_RETRY_AFTER_S)


def http_failure(
    backend: str, status: int | None, headers: Mapping[str, str] | None
) -> BackendUnavailable | RateLimited:
    """The error for a failed CRM call (logged as ``crm.http_error``, status only).

    Args:
        backend: ``hubspot`` or ``salesforce``.
        status: the HTTP status (None when there was no response).
        headers: the response headers.

    Returns:
        :class:`RateLimited` for 429 (``retry_after`` in seconds), else
        :class:`BackendUnavailable` naming the status (401/403: the credentials).
    """
    log.warning("crm.http_error", extra={"backend": backend, "status": status})
    if status == 429:
        retry = retry_after_s((headers or {}).get("Retry-After"))
        return RateLimited(f"{backend} rate limit (HTTP 429)", retry_after=retry)
    if status in (401, 403):
        return BackendUnavailable(
            f"{backend} refused the credentials (HTTP {status}): check the token and its scopes"
        )
    return BackendUnavailable(f"{backend} answered HTTP {status}")


def unreachable(backend: str, exc: BaseException) -> BackendUnavailable:
    """The error for a CRM that could not be reached (logged as ``crm.unreachable``).

    Only the exception's type is logged and named (its text may carry a URL with a token).
    """
    log.warning("crm.unreachable", extra={"backend": backend, "error": type(exc).__name__})
    return BackendUnavailable(f"{backend} unreachable ({type(exc).__name__})")


class Cooldown:
    """Honours a CRM's ``Retry-After``: until it has passed, calls fail without a request.

    Args:
        backend: the backend's name (in the error message).
    """

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._until = 0.0

    def check(self) -> None:
        """Raise while the last 429's ``Retry-After`` has not passed.

        Raises:
            bot.errors.RateLimited: with the seconds left as ``retry_after``.
        """
        left = self._until - time.monotonic()
        if left > 0:
            raise RateLimited(f"{self._backend} rate limit (cooling down)", retry_after=left)

    def note(self, exc: BaseException) -> None:
        """Start the cool-down when ``exc`` is a :class:`RateLimited`."""
        if isinstance(exc, RateLimited):
            self._until = max(self._until, time.monotonic() + exc.retry_after)
