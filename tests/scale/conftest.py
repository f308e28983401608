"""Fixtures of the scale-out tests: real Redis (AOF), real PostgreSQL, hub processes.

Every server and process listens on 127.0.0.1 on a free port and is stopped by its own PID.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.postgres import PostgresServer, postgres_server  # noqa: F401 (fixture)
from tests.fakes.redis_server import RedisServer
from tests.scale.cluster import Deployment


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` with AOF ``appendfsync always`` (a restart keeps what it accepted)."""
    server = RedisServer.start(
        tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always"
    )
    yield server
    server.stop()


@pytest.fixture
def deployment(
    tmp_path: Path,
    redis_aof: RedisServer,
    postgres_server: PostgresServer,  # noqa: F811
) -> Iterator[Deployment]:
    """An empty database and the settings shared by the processes (none started yet)."""
    dep = Deployment(tmp_path, redis_aof, postgres_server.create_database())
    yield dep
    dep.stop_all()
