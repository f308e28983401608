"""The Redis key names of the lanes of one prefix.

Keys (``P`` is the ``prefix``), every multi-key operation being one Lua script on one slot::

    {P:<session>}:q   list   waiting and running messages, oldest first   (session slot)
    {P:<session>}:h   hash   lane state, lease, fencing token             (session slot)
    {P}:ready         zset   sessions ready for a turn (score: sequence)  (global slot)
    {P}:delayed       zset   sessions in a collect quiet window (due ms)  (global slot)
    {P}:slots         zset   running turns across all workers (lease ms)  (global slot)
    {P}:stats         hash   counters: queued, lanes, seq, fence, ver     (global slot)
    {P}:held          set    sessions ready again once their slot is freed (global slot)

A session key holding braces would break its hash tag: its tag is then ``P:#<sha1>`` and the
session hash keeps the key itself (field ``sk``, see :func:`stored_name`) for the sweeper.

Pub/sub channel ``P:wake`` (JSON) wakes workers when work became ready, asks a worker to
cancel a turn and offers overflow notices to workers.
"""

from __future__ import annotations

import hashlib


def stored_name(session: str) -> str:
    """The session key when its hash tag is a digest (stored for the sweeper), else ``""``."""
    return session if "{" in session or "}" in session else ""


class LaneKeys:
    """The key names of one prefix (see the module docstring).

    Args:
        prefix: key prefix; processes with the same prefix share the lanes.

    Raises:
        ValueError: when ``prefix`` contains braces.
    """

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("prefix must not contain braces")
        self.prefix = prefix
        g = "{" + prefix + "}"
        self.global_keys = [f"{g}:ready", f"{g}:delayed", f"{g}:slots", f"{g}:stats", f"{g}:held"]
        """``[ready, delayed, slots, stats, held]`` (one hash slot); do not mutate."""
        self.channel = f"{prefix}:wake"
        """The pub/sub channel of wake-ups, cancel requests and overflow notices."""
        self.hash_pattern = "{" + prefix + ":*}:h"
        """A ``SCAN MATCH`` pattern of every session hash."""

    def session(self, session: str) -> list[str]:
        """The keys of one session: ``[list, hash]`` (one hash slot)."""
        tag = self.tag(session)
        return [f"{tag}:q", f"{tag}:h"]

    def tag(self, session: str) -> str:
        """The hash tag of a session's keys, braces included: ``{P:<session>}``.

        Other keys of the session's (enqueue marks) start with it too, so they live on the
        same node as its lane.
        """
        return "{" + self._tag(session) + "}"

    def _tag(self, session: str) -> str:
        """The hash tag of a session's keys; a digest when the key itself holds braces."""
        if "{" in session or "}" in session:
            return f"{self.prefix}:#{hashlib.sha1(session.encode()).hexdigest()}"
        return f"{self.prefix}:{session}"

    @staticmethod
    def session_keys_of_hash(hash_key: str) -> list[str]:
        """The ``[list, hash]`` keys of the session whose hash is ``hash_key``."""
        tag = hash_key[: -len(":h")]
        return [f"{tag}:q", f"{tag}:h"]

    def session_of_hash(self, hash_key: str, named: str) -> str | None:
        """The session whose hash is ``hash_key``.

        Args:
            hash_key: a key matched by :attr:`hash_pattern`.
            named: the hash's ``sk`` field (``""`` when absent).

        Returns:
            The session key; None for a digest tag whose hash holds no name (written by an
            older version).
        """
        if named:
            return named
        session = hash_key[len(self.prefix) + 2 : -len("}:h")]  # between "{P:" and "}:h"
        return None if session.startswith("#") else session
