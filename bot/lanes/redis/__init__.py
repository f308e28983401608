"""The Redis lane backend: many ingress and worker processes on many hosts share the lanes.

:class:`RedisLaneQueue` keeps every lane in Redis (or Redis Cluster) and runs the turns this
process claims. It has the semantics of :mod:`bot.lanes.base` (the contract suite in
``tests/lanes/`` runs unchanged on it) plus the guarantees of several processes:

- **Stored before acknowledged.** ``enqueue`` returns only after Redis holds the message; when
  Redis cannot be reached it raises :class:`bot.errors.BackendUnavailable` (ingress answers
  503 and the platform retries). With AOF (``appendfsync always``) nothing accepted is lost
  across a Redis restart.
- **Removed only when handled.** A turn's messages stay at the head of the session's list
  until the handler returned (``ack``); a worker that dies mid-turn loses its lease after
  ``lease_s`` seconds and another worker resumes the same turn from the first unfinished
  message. Leases carry a fencing token (a global ``INCR``): a worker whose lease was taken
  over cannot acknowledge (``lane.ack_refused``) and its turn is cancelled at its next
  heartbeat. Replies of a resumed turn must carry an idempotency key (the hub's job).
- **One turn per session, a global cap across all processes.** A session's lease (heartbeat
  every ``lease_s / 3``) is held in the session's hash; the cap is a zset of slot leases
  (member: session, score: expiry) that every worker's claim script counts.
- **Fair.** Sessions with work wait in one ready zset ordered by a sequence number; a session
  whose turn ended goes to its back. Sessions of dead workers are resumed first.
- **No session stuck.** The global loop keeps a batch of pushes and releases until Redis took
  it, whatever the error; a push meeting a still-held slot waits in the held set for that
  slot's release. For what a crash can still leave (a session script ran, its global step
  never did), each consumer runs a sweeper every ``sweep_s`` seconds.
- **Idle lanes cost nothing.** A session's list disappears with its last message and its hash
  expires ``lane_idle_s`` seconds after its last turn; no task runs per idle session.

Hot path per message (``followup`` mode, one message per turn): ``enqueue`` = 2 round trips
(session script, global script); a turn = begin (1), ack (1), release-and-claim-next (1); so
5 round trips per message, fewer in ``collect`` mode where a turn takes several messages.

``drain`` stops claiming turns, waits (bounded) for this process's running turns and gives
back the leases of those it cancels (another worker resumes them at once). It returns the
messages still unhandled of the sessions this process touched (enqueued to or ran); those
messages also stay in Redis for other workers, so nothing is lost and the caller must not
enqueue them again.

``stats()`` needs no I/O: ``active_turns`` counts this process's running turns;
``queued``, ``lanes`` and ``ready_sessions`` are the global counters of the latest reply from
the global slot, minus the messages of this process's running turns for ``queued``. The
counters may drift by a turn's messages when a worker dies between its ``ack`` and its
release (a window of one round trip).

Modules, each one part:

- :mod:`~bot.lanes.redis.client`: :func:`connect` (URL forms, pools, the cluster client).
- :mod:`~bot.lanes.redis.keys`: the key names and the wake channel.
- :mod:`~bot.lanes.redis.scripts`: the Lua scripts.
- :mod:`~bot.lanes.redis.batcher`: calling them by name, concurrent calls as one pipeline.
- :mod:`~bot.lanes.redis.global_loop`: the one writer of the global slot (pushes,
  releases, claims).
- :mod:`~bot.lanes.redis.turns`: the turns of claimed slots (begin, handle, ack, leases).
- :mod:`~bot.lanes.redis.sweeper`: the stuck-session sweeper.
- :mod:`~bot.lanes.redis.wake`: the pub/sub wake channel (wake-ups, cancels, notices).
- :mod:`~bot.lanes.redis.queue`: :class:`RedisLaneQueue`, the API over them.
"""

from bot.lanes.redis.client import POOL_MAX_CONNECTIONS, POOL_WAIT_S, connect
from bot.lanes.redis.queue import RedisLaneQueue

__all__ = ["POOL_MAX_CONNECTIONS", "POOL_WAIT_S", "RedisLaneQueue", "connect"]
