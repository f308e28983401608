"""The hub: ingest, delivery, and the process that joins lanes, store, agent, handoff and channels.

``ingest`` is the one door for customer messages: deduplicate by ``(channel, account,
event_id)``, persist durably, publish, enqueue on the session's lane. Only after it returns may a
channel acknowledge the platform. ``deliver`` is the one door out: store (idempotent), publish,
send through the customer's own channel with retries.

A hub either consumes its lanes (runs turns: ``switchboard serve`` and ``switchboard worker``)
or only feeds them (``switchboard serve --workers 0``: ingress only; needs shared lanes). It is
built from settings by :func:`bot.compose.build_hub`.

Modules: :mod:`~bot.hub.lifecycle` (:class:`Hub`: wiring, start, stop),
:mod:`~bot.hub.ingest` (the door in, dedupe), :mod:`~bot.hub.deliver` (the door out, inline
retries), :mod:`~bot.hub.outbox` (later resends), :mod:`~bot.hub.recovery` (accepted messages
on no lane) and :mod:`~bot.hub.policy` (:class:`DeliveryPolicy`).

Recovery, nothing lost and nothing answered twice:

- **One process, memory lanes**: :meth:`Hub.start` re-enqueues every stored message that is
  not handled (``store.unhandled()``).
- **Shared (Redis) lanes**, several ingress and worker processes: a message is *accepted*
  (2xx to the platform) only once the store has it and ``lanes.enqueue`` returned (Redis has
  it). After a successful enqueue the hub writes an *enqueued mark* (``EnqueueMarks``, in the
  event publisher's pipeline, same Redis node as the lane). When the store has the message but
  the enqueue failed (Redis down: 503) or the process died between the two, the platform
  retries; the retry is a duplicate in the store, and the hub re-enqueues it **iff it has no
  mark** before answering. A sweep (every ``RECOVERY_INTERVAL_S`` seconds, in consuming
  processes, one at a time) re-enqueues stored unhandled messages that stayed unmarked over
  two sweeps (Redis lost data, a platform that never retries), each under a claim so two
  processes never both do it. Turns of a dead worker are resumed by the lanes (lease expiry).
  Every answer carries the idempotency key ``answer:{event_id}`` (notices ``failure:...``),
  so a message that reaches a lane twice (a mark lost with its writer) or a resumed turn never
  answers twice: the store returns the earlier answer and nothing is sent again.
- **A platform that does not take an answer** (down, rate limiting, network errors) past the
  inline retries goes to the store's *outbox*; while a session has outbox entries its later
  messages queue behind them (FIFO per session: answer 2 never overtakes answer 1). A loop in
  consuming processes (:meth:`Hub.drain_outbox`) sends due entries, the oldest of each session
  first, backing off from ``DeliveryPolicy.outbox_retry_s`` (30 s) doubling to
  ``outbox_retry_max_s`` (15 min), for at most ``outbox_max_age_s`` (a day); then the entry is
  given up (``hub.send_abandoned``, ``switchboard_send_abandoned_total``) and a session still
  with the bot is escalated to a human (reason ``undeliverable``). Claims are leased in the
  store, so two processes never send one entry at once. A permanent refusal (any other error)
  is logged and counted, never retried. Typing indicators never enter the outbox.
"""

from bot.hub.lifecycle import Hub
from bot.hub.policy import (
    RETRYABLE_SEND_ERRORS,
    SEND_MAX_ATTEMPTS,
    SEND_MAX_SECONDS,
    DeliveryPolicy,
)
from bot.hub.recovery import RECOVERY_INTERVAL_S

__all__ = [
    "RECOVERY_INTERVAL_S",
    "RETRYABLE_SEND_ERRORS",
    "SEND_MAX_ATTEMPTS",
    "SEND_MAX_SECONDS",
    "DeliveryPolicy",
    "Hub",
]
