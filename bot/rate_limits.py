"""Where rate-limit counters live: one place for every process of a deployment.

Counters (failed console logins per name and per address, e-mails per sender per hour) use the
`limits <https://limits.readthedocs.io/>`_ library. With one process they live in its memory.
With shared lanes (``SWITCHBOARD_LANE_BACKEND=redis``) several ingress processes serve the
same customers and agents, so the counters live in the same Redis as the lanes (limits'
``RedisStorage``, or ``RedisClusterStorage`` for a cluster URL, both on redis-py): a login name
locked out through one ingress is locked out through all of them.

A counter that cannot be read or written (Redis down) raises
:class:`~bot.errors.BackendUnavailable` (callers answer 503, or retry later): limits are never
silently skipped.

A counter's key names whom it counts (``sb:limits:LIMITER/<sender>/<amount>/<n>/<unit>``: an
e-mail sender's address, a login name) and holds only hit times; :func:`forget_counters` deletes
those of a data subject on erasure. In memory they are gone within their window (an hour).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
from limits.errors import StorageError

from bot.config import Settings
from bot.errors import BackendUnavailable

KEY_PREFIX = "sb:limits"
"""Prefix of every counter key in Redis."""

_T = TypeVar("_T")


def limits_uri(redis_url: str) -> tuple[str, bool]:
    """The ``limits`` storage URI of one of our Redis URLs, and whether it names a cluster.

    Our forms (see :func:`bot.lanes.redis.connect`): ``redis://host:port/db``,
    ``rediss://…``, ``redis+cluster://h1:p1,h2:p2`` or a comma-separated node list.
    ``limits`` wants ``async+redis://…`` and ``async+redis+cluster://h1:p1,h2:p2``.

    Raises:
        ValueError: the URL has no ``redis`` or ``rediss`` scheme.
    """
    scheme, sep, rest = redis_url.partition("://")
    if not sep:
        raise ValueError(f"not a Redis URL: {redis_url!r}")
    cluster = scheme.endswith("+cluster") or "," in rest
    base = scheme.removesuffix("+cluster")
    if base not in ("redis", "rediss"):
        raise ValueError(f"not a Redis URL: {redis_url!r}")
    if cluster:
        nodes = ",".join(part.split("://", 1)[-1] for part in rest.split(","))
        return f"async+{base}+cluster://{nodes}", True
    return f"async+{base}://{rest}", False


def counter_storage(settings: Settings) -> Storage:
    """The storage for rate-limit counters under ``settings``.

    Redis (the lanes' server or cluster) when ``lane_backend`` is ``redis`` and ``redis_url``
    is set; process memory otherwise. The storage connects lazily, on its first use.

    Raises:
        ValueError: ``redis_url`` is not a Redis URL.
    """
    if settings.lane_backend != "redis" or not settings.redis_url:
        return MemoryStorage()
    uri, cluster = limits_uri(settings.redis_url)
    if cluster:
        return RedisClusterStorage(
            uri, wrap_exceptions=True, implementation="redispy", key_prefix=KEY_PREFIX
        )
    return RedisStorage(uri, wrap_exceptions=True, implementation="redispy", key_prefix=KEY_PREFIX)


async def counted(call: Awaitable[_T]) -> _T:
    """Await a ``limits`` call; a storage failure becomes ``BackendUnavailable``.

    Raises:
        BackendUnavailable: the counters' storage (Redis) cannot be reached.
    """
    try:
        return await call
    except StorageError as exc:
        raise BackendUnavailable(
            f"rate-limit counters unavailable: {exc.storage_error!r}"
        ) from exc


async def _keys_naming(client: Any, names: Callable[[str], bool]) -> list[str]:
    """The counter keys for which ``names(key)``, sorted (one ``SCAN`` over the counters)."""
    found = {str(k) async for k in client.scan_iter(match=f"{KEY_PREFIX}:*", count=1000)}
    return sorted(k for k in found if names(k))


async def counters_naming(client: Any, names: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The Redis counters whose key ``names(key)`` someone (data-subject access request).

    Args:
        client: a redis-py asyncio client of the counters' server or cluster.
        names: True for a key naming the subject (its identifiers among the key's parts).

    Returns:
        ``[{"key", "expires_in_s"}]`` (the key holds the identifier; its value only hit
        times), sorted by key; ``expires_in_s`` is -1 without an expiry.

    Raises:
        redis.exceptions.RedisError, OSError: when Redis cannot be reached.
    """
    return [
        {"key": k, "expires_in_s": int(await client.ttl(k))}
        for k in await _keys_naming(client, names)
    ]


async def forget_counters(client: Any, names: Callable[[str], bool]) -> int:
    """Delete the Redis counters whose key ``names(key)`` someone (data-subject erasure).

    Args:
        client: a redis-py asyncio client of the counters' server or cluster.
        names: True for a key naming the subject (its identifiers among the key's parts).

    Returns:
        How many keys were deleted.

    Raises:
        redis.exceptions.RedisError, OSError: when Redis cannot be reached.
    """
    doomed = await _keys_naming(client, names)
    for key in doomed:  # one by one: counters of one subject may sit on several nodes
        await client.delete(key)
    return len(doomed)
