"""The redis-py client of the Redis lanes (also used by the event bus, leader leases and tests).

:func:`connect` turns one URL into a single-server client (a blocking connection pool) or a
Redis Cluster client, with redis-py's retries on connection errors.

URLs: ``redis://[user:pass@]host:port/db``, ``rediss://...`` and ``unix://...`` select one
server; a Redis Cluster is named by ``redis+cluster://[user:pass@]h1:p1,h2:p2``
(``rediss+cluster://`` for TLS) or by a comma-separated list of nodes, either
``h1:p1,h2:p2`` or ``redis://h1:p1,redis://h2:p2``; any reachable node is enough to discover
the rest.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

Client = aioredis.Redis | RedisCluster
"""What :func:`connect` returns."""

UNAVAILABLE: Final = (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError)
"""Errors that mean "Redis cannot be reached" (not a bug in a script)."""

RECONNECT_BACKOFF: Final = ExponentialBackoff(cap=5.0, base=0.05)
"""Seconds a background loop waits after its n-th failure in a row (50 ms doubling to 5 s)."""

POOL_MAX_CONNECTIONS: Final = 64
"""Connections per process to a single Redis server."""
POOL_WAIT_S: Final = 5.0
"""Seconds a command waits for a free pooled connection before failing."""


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means that Redis cannot be reached (one of :data:`UNAVAILABLE`)."""
    return isinstance(exc, UNAVAILABLE)


def connect(url: str, *, retries: int = 3) -> Client:
    """A redis-py asyncio client for ``url`` (see the module docstring for the forms).

    Commands are retried ``retries`` times on connection errors with exponential backoff
    (redis-py's ``Retry``/``ExponentialBackoff``, 20 ms doubling up to 0.5 s).

    Raises:
        ValueError: when a cluster URL names no node.
    """
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries)
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        "retry": retry,
    }
    scheme, sep, rest = url.partition("://")
    cluster = scheme.endswith("+cluster") or "," in url
    if not cluster:
        # A blocking pool: a burst of concurrent enqueues waits for a free connection (up to
        # POOL_WAIT_S seconds) instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            **common,
        )
        client: aioredis.Redis = aioredis.Redis.from_pool(pool)
        return client
    if not sep:
        scheme, rest = "redis", url
    username = password = None
    nodes: list[ClusterNode] = []
    for part in rest.split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if "@" in part:
            auth, part = part.rsplit("@", 1)
            user, _, pw = auth.partition(":")
            username, password = unquote(user) or None, unquote(pw) or None
        hostport = part.split("/", 1)[0]
        if not hostport:
            continue
        host, _, port = hostport.rpartition(":")
        nodes.append(ClusterNode(host or hostport, int(port) if host else 6379))
    if not nodes:
        raise ValueError(f"no cluster node in {url!r}")
    return _ClusterClient(
        startup_nodes=nodes,
        username=username,
        password=password,
        ssl=scheme.startswith("rediss"),
        **common,
    )


class _ClusterClient(RedisCluster):
    """redis-py's asyncio ``RedisCluster``, safe under hundreds of concurrent callers.

    Two guards around every command:

    - **Initialized first.** A command issued while the client has no slot map (before the
      first use, or after it reset itself on an error) is routed by a default policy to some
      node and answered ``MOVED``; every ``reinitialize_steps`` (5) ``MOVED`` answers the
      client calls ``aclose()``, which closes the connections other tasks are using, and they
      fail with ``AttributeError: 'NoneType' object has no attribute 'writelines'``
      (redis-py 8.1; see redis/redis-py#4322 on the ``MOVED``/``aclose`` path). So each
      command first awaits ``initialize()`` (free once initialized; callers queue on its
      lock while it runs).
    - **Bounded in flight.** At most ``POOL_MAX_CONNECTIONS`` commands run at once; the others
      wait up to ``POOL_WAIT_S`` seconds (the per-node pool raises ``MaxConnectionsError`` at
      once when it is exhausted, unlike the blocking pool of the single-server client).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(POOL_MAX_CONNECTIONS)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run one command once the slot map is known, within the in-flight bound.

        Raises:
            redis.exceptions.ConnectionError: when no slot frees within ``POOL_WAIT_S``, or
                as ``RedisCluster.execute_command`` does.
        """
        if self._initialize:
            await self.initialize()
        try:
            async with asyncio.timeout(POOL_WAIT_S):
                await self._in_flight.acquire()
        except TimeoutError:
            raise RedisConnectionError("no free cluster connection") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._in_flight.release()
