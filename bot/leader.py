"""Who runs the pull receivers: one process per ``(channel, account)``, by a Redis lease.

A pull receiver (:class:`bot.channel.PullReceiver`: Telegram long polling, IMAP, the Discord
gateway, Slack Socket Mode) fetches traffic itself, so two processes running it compete
(Telegram answers the second ``getUpdates`` with 409 Conflict, IMAP readers race, two Discord
gateway sessions both receive every message). :class:`PullReceivers` runs each receiver of a
process's channels:

- **Memory lanes** (one process): started directly, no lock.
- **Shared (Redis) lanes**, several ingress processes: each receiver runs under a
  :class:`LeaderLease`, a redis-py :class:`redis.asyncio.lock.Lock` named
  ``switchboard:leader:{channel}:{account}`` with a timeout of ``receiver_lease_s`` seconds
  (default 15). The holder renews it (``reacquire``: the TTL back to the full timeout) every
  third of the timeout. A process that cannot take the lock tries again every
  :func:`retry_interval` seconds (at most 3). A holder whose renewals fail (lock taken over,
  Redis unreachable) for two thirds of the timeout stops its receiver before the lock can
  expire, so two processes never fetch at once while the clocks of Redis and the process
  agree. A graceful stop releases the lock (another process takes over within a retry
  interval); a crashed holder's lock expires after the timeout.

``switchboard worker`` processes never run receivers (``Hub.receives`` is False): they use
their channels only to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from bot.channel import ChannelPlugin, PullReceiver
from bot.errors import SwitchboardError
from bot.redis_pubsub import raise_if_cancelled

log = logging.getLogger(__name__)

KEY_PREFIX = "switchboard:leader:"
"""Prefix of the lease keys: ``switchboard:leader:{channel}:{account}``."""


def retry_interval(lease_s: float) -> float:
    """Seconds between attempts to take (or renew) a lease: ``lease_s / 5``, within [0.1, 3]."""
    return min(3.0, max(0.1, lease_s / 5))


class LeaderLease:
    """Run ``on_acquired`` while this process holds a Redis lock, ``on_lost`` when it stops.

    Args:
        client: a redis-py asyncio client (``Redis`` or ``RedisCluster``).
        name: the lock's key.
        on_acquired: starts the leader's work; an exception releases the lock and is retried
            after :func:`retry_interval` seconds.
        on_lost: stops it (lease lost or :meth:`stop`); must not raise.
        lease_s: the lock's timeout in seconds (the takeover time after a crash).

    Attributes:
        is_leader: True while ``on_acquired`` has run and ``on_lost`` has not.
        terms: how many times this process became the leader.
    """

    def __init__(
        self,
        client: Any,
        name: str,
        *,
        on_acquired: Callable[[], Awaitable[None]],
        on_lost: Callable[[], Awaitable[None]],
        lease_s: float = 15.0,
    ) -> None:
        self.name = name
        self.lease_s = lease_s
        self.is_leader = False
        self.terms = 0
        self._lock = Lock(client, name, timeout=lease_s, blocking=False, thread_local=False)
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start contending for the lease (a background task)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"leader:{self.name}")

    async def stop(self) -> None:
        """Stop contending: run ``on_lost`` if leading and release the lock (best effort)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._step_down(release=True)

    async def _run(self) -> None:
        retry_s = retry_interval(self.lease_s)
        while True:
            try:
                acquired = await self._lock.acquire()
            except RedisError as exc:
                log.warning(
                    "leader.acquire_failed", extra={"lease": self.name, "error": repr(exc)}
                )
                acquired = False
            raise_if_cancelled()
            if not acquired:
                await asyncio.sleep(retry_s)
                continue
            if await self._lead():
                await self._hold()
            await self._step_down(release=True)
            await asyncio.sleep(retry_s)

    async def _lead(self) -> bool:
        """Run ``on_acquired``; False (logged) when it failed."""
        self.is_leader = True
        self.terms += 1
        log.info("leader.acquired", extra={"lease": self.name, "term": self.terms})
        try:
            await self._on_acquired()
        except Exception:  # the task boundary: release, retry later
            log.exception("leader.start_failed", extra={"lease": self.name})
            return False
        return True

    async def _hold(self) -> None:
        """Renew the lock every third of the timeout; return once it is lost.

        A renewal that has not succeeded within two thirds of the timeout after the last one
        (Redis unreachable or slow) counts as lost: the receiver stops before the lock expires.
        """
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        pause = self.lease_s / 3
        while True:
            await asyncio.sleep(pause)
            raise_if_cancelled()
            deadline = renewed_at + self.lease_s * 2 / 3
            try:
                async with asyncio.timeout_at(deadline):
                    await self._lock.reacquire()
                raise_if_cancelled()
            except LockError as exc:  # LockNotOwnedError: expired, maybe taken over
                log.warning("leader.lost", extra={"lease": self.name, "error": repr(exc)})
                return
            except (RedisError, TimeoutError) as exc:
                if loop.time() >= deadline:
                    log.warning("leader.lost", extra={"lease": self.name, "error": repr(exc)})
                    return
                log.warning("leader.renew_failed", extra={"lease": self.name, "error": repr(exc)})
                pause = retry_interval(self.lease_s)
                continue
            renewed_at = loop.time()
            pause = self.lease_s / 3

    async def _step_down(self, *, release: bool) -> None:
        if self.is_leader:
            self.is_leader = False
            try:
                await self._on_lost()
            except Exception:  # the task boundary: the receiver is gone either way
                log.exception("leader.stop_failed", extra={"lease": self.name})
            log.info("leader.stepped_down", extra={"lease": self.name})
        if release and self._lock.local.token is not None:
            with contextlib.suppress(LockError, RedisError):
                await self._lock.release()
            self._lock.local.token = None


class PullReceivers:
    """The pull receivers of one process's channels (see the module docstring).

    Args:
        channels: the process's channels; those implementing :class:`PullReceiver` with a
            ``receiver_account()`` are run.
        client: a redis-py asyncio client for the leases, or None (memory lanes: one process,
            receivers started directly).
        lease_s: the lease timeout in seconds (``receiver_lease_s``).

    Attributes:
        leases: the lease of each receiver by key (empty without ``client``).
    """

    def __init__(
        self, channels: Iterable[ChannelPlugin], *, client: Any = None, lease_s: float = 15.0
    ) -> None:
        self._client = client
        self._lease_s = lease_s
        self._receivers: dict[str, PullReceiver] = {}
        for channel in channels:
            if isinstance(channel, PullReceiver):
                account = channel.receiver_account()
                if account is not None:
                    self._receivers[f"{KEY_PREFIX}{channel.name}:{account}"] = channel
        self.leases: dict[str, LeaderLease] = {}
        self._direct: list[PullReceiver] = []

    async def start(self) -> None:
        """Start each receiver (memory lanes) or contend for its lease (shared lanes).

        Raises:
            bot.errors.SwitchboardError: from a receiver started directly (memory lanes).
        """
        for key, receiver in self._receivers.items():
            if self._client is None:
                await receiver.start_receiving()
                self._direct.append(receiver)
                continue
            lease = LeaderLease(
                self._client,
                key,
                on_acquired=receiver.start_receiving,
                on_lost=receiver.stop_receiving,
                lease_s=self._lease_s,
            )
            self.leases[key] = lease
            lease.start()

    async def stop(self) -> None:
        """Stop every receiver (each ingests what it already fetched) and release the leases."""
        await asyncio.gather(*(lease.stop() for lease in self.leases.values()))
        self.leases.clear()
        direct, self._direct = self._direct, []
        for receiver in direct:
            try:
                await receiver.stop_receiving()
            except Exception:  # shutdown boundary: stop the others too
                log.exception("leader.stop_failed", extra={"receiver": type(receiver).__name__})


class SingletonLoop:
    """Runs ``work()`` every ``interval_s`` seconds, in one process of a deployment at a time.

    With a Redis client, the loop runs while this process holds the :class:`LeaderLease` ``key``
    (another process takes over within a lease when it stops); without one (memory lanes: one
    process) it runs directly. The first pass runs at start. A failing pass is logged as
    ``{name}.failed`` (a :class:`~bot.errors.SwitchboardError`, such as the database being
    down, as a warning; anything else with its traceback) and retried at the next interval.

    Args:
        name: names the task and the log events (``retention``, ``assignment``).
        work: one pass.
        interval_s: seconds between the end of a pass and the start of the next.
        key: the lease key (under :data:`KEY_PREFIX`).
        lease_client: a redis-py asyncio client, or None to run directly.
        lease_s: the lease timeout in seconds.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[Any]],
        *,
        interval_s: float,
        key: str,
        lease_client: Any = None,
        lease_s: float = 15.0,
    ) -> None:
        self.name = name
        self._work = work
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._lease: LeaderLease | None = None
        if lease_client is not None:
            self._lease = LeaderLease(
                lease_client, key, on_acquired=self._begin, on_lost=self._end, lease_s=lease_s
            )
        self._started = False

    def start(self) -> None:
        """Start: the loop now, or the lease that starts it (a second call does nothing)."""
        if self._started:
            return
        self._started = True
        if self._lease is not None:
            self._lease.start()
        else:
            self._task = asyncio.create_task(self._loop(), name=f"{self.name}-loop")

    async def stop(self) -> None:
        """Stop the loop (a pass in progress is cancelled) and release the lease."""
        self._started = False
        if self._lease is not None:
            await self._lease.stop()
        await self._end()

    async def _begin(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"{self.name}-loop")

    async def _end(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self._work()
            except SwitchboardError as exc:  # the database is down: try at the next interval
                log.warning(f"{self.name}.failed", extra={"error": repr(exc)})
            except Exception:  # task boundary: the loop must survive
                log.exception(f"{self.name}.failed")
            await asyncio.sleep(self.interval_s)
