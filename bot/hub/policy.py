"""How hard the hub tries to deliver: inline send retries, then the outbox's schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bot.errors import ChannelUnavailable, RateLimited

SEND_MAX_ATTEMPTS = 6
SEND_MAX_SECONDS = 60.0

RETRYABLE_SEND_ERRORS: Final = (ChannelUnavailable, RateLimited, OSError)
"""Send errors worth another try (platform down, rate limited, network); others are refusals."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard the hub tries to deliver: inline retries, then the outbox.

    Attributes:
        send_attempts: inline retries after a failed first send.
        send_budget_s: seconds the inline retries may take in all.
        outbox_retry_s: seconds from putting an entry to its first outbox retry; the delay
            doubles with each failed retry (30, 60, 120... seconds).
        outbox_retry_max_s: the longest delay between two retries, in seconds.
        outbox_poll_s: seconds between two passes of the outbox loop.
        outbox_lease_s: seconds a claimed entry is reserved for this process (longer than a
            send may take); a process that dies leaves it due again after that.
        outbox_batch: most entries one claim takes (sent concurrently, one per session).
    """

    send_attempts: int = SEND_MAX_ATTEMPTS
    send_budget_s: float = SEND_MAX_SECONDS
    outbox_retry_s: float = 30.0
    outbox_retry_max_s: float = 15 * 60.0
    outbox_poll_s: float = 5.0
    outbox_lease_s: float = 120.0
    outbox_batch: int = 32

    def outbox_delay(self, attempts: int, error: BaseException | None = None) -> float:
        """Seconds to wait before the next outbox retry, after ``attempts`` failed retries.

        ``outbox_retry_s * 2**attempts``, at most ``outbox_retry_max_s``, and never less than a
        ``RateLimited.retry_after``.
        """
        delay = min(self.outbox_retry_max_s, self.outbox_retry_s * 2.0 ** min(attempts, 32))
        if isinstance(error, RateLimited):
            delay = max(delay, error.retry_after)
        return delay
