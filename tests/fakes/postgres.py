"""A throw-away PostgreSQL server for tests: Debian's ``initdb`` in a temp dir, stopped by PID.

The server runs from ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package,
which ``make test`` installs when missing), listens on 127.0.0.1 on a free port and on a Unix
socket in its own temp dir, trusts local connections, and runs with ``fsync=off`` (its data is
thrown away). As root it runs as the unprivileged ``postgres`` user (PostgreSQL refuses to run
as root). One server serves the whole test session; tests that need an empty database create
one with :meth:`PostgresServer.create_database`.

Fixtures (import them into a ``conftest.py``):

- ``postgres_server``: the running :class:`PostgresServer` (session scope).
- ``postgres_url``: a ``postgresql+asyncpg://`` URL of the database ``switchboard`` on it.

``SWITCHBOARD_TEST_POSTGRES_URL`` set to an existing server's URL skips starting one for
``postgres_url`` (e.g. to test against another PostgreSQL version).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

SUPERUSER = "switchboard"
"""The cluster's superuser (trust authentication, no password)."""

START_TIMEOUT_S = 30.0
"""How long ``postgres`` may take to accept connections."""

STOP_TIMEOUT_S = 15.0
"""How long a fast shutdown (SIGINT) may take before the server is killed."""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL binaries are missing or the server did not start (with its log tail)."""


def find_bin_dir() -> Path:
    """The ``bin`` folder of the newest installed Debian PostgreSQL.

    Raises:
        PostgresUnavailable: when no ``/usr/lib/postgresql/*/bin/initdb`` exists.
    """
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if not found:
        raise PostgresUnavailable(
            "PostgreSQL is not installed: run `make system-deps` (Debian package postgresql)"
        )
    return found[-1].parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running throw-away PostgreSQL cluster.

    Attributes:
        base: its temp dir (data in ``data/``, the Unix socket, ``postgres.log``).
        port: its TCP port on 127.0.0.1.
        bin_dir: the PostgreSQL ``bin`` folder used.
        process: the ``postgres`` server process (its PID is the postmaster's).
    """

    base: Path
    port: int
    bin_dir: Path
    process: subprocess.Popen[bytes]
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql+asyncpg://`` URL of ``database`` on this server (TCP, 127.0.0.1)."""
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its asyncpg URL.

        Args:
            name: the database name; None picks a new unique one (``test_1``, ``test_2``...).

        Raises:
            subprocess.CalledProcessError: when ``createdb`` fails (e.g. the name exists).
        """
        if name is None:
            with self._lock:
                name = f"test_{next(self._names) + 1}"
        subprocess.run(
            [str(self.bin_dir / "createdb"), *self._client_args(), name],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return self.url(name)

    def _client_args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log (for error messages)."""
        try:
            return (self.base / "postgres.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster's PID), SIGKILL after ``STOP_TIMEOUT_S``.

        The temp dir is removed afterwards.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        shutil.rmtree(self.base, ignore_errors=True)


def _run_as() -> dict[str, int]:
    """``subprocess`` credentials: the ``postgres`` user when we are root, else nothing."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresUnavailable("running as root and no `postgres` user exists") from exc
    return {"user": user.pw_uid, "group": user.pw_gid}


_NO_DURABILITY: Final = (
    "-c",
    "fsync=off",
    "-c",
    "synchronous_commit=off",
    "-c",
    "full_page_writes=off",
)
"""Server options of a test cluster whose data is thrown away."""


def start_postgres(bin_dir: Path | None = None, *, durable: bool = False) -> PostgresServer:
    """``initdb`` a cluster in a new temp dir and start ``postgres`` on a free port.

    Args:
        bin_dir: the PostgreSQL ``bin`` folder (default: :func:`find_bin_dir`).
        durable: keep PostgreSQL's default durability (``fsync``, ``synchronous_commit``,
            ``full_page_writes`` on), as benchmarks need; tests run without it.

    Returns:
        The running server; call :meth:`PostgresServer.stop`.

    Raises:
        PostgresUnavailable: when PostgreSQL is missing or does not accept connections within
            ``START_TIMEOUT_S``.
    """
    bin_dir = bin_dir or find_bin_dir()
    creds = _run_as()
    base = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
    if creds:
        os.chown(base, creds["user"], creds["group"])
    data = base / "data"
    try:
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            **creds,  # type: ignore[call-overload]
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
    last_error = ""
    for _attempt in range(3):  # another process may take the free port before postgres binds it
        port = _free_port()
        log = os.open(base / "postgres.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if creds:
            os.fchown(log, creds["user"], creds["group"])
        try:
            process = subprocess.Popen(  # type: ignore[call-overload]
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(data),
                    "-k",
                    str(base),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    *([] if durable else _NO_DURABILITY),
                    "-c",
                    "max_connections=200",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                **creds,
            )
        finally:
            os.close(log)
        server = PostgresServer(base=base, port=port, bin_dir=bin_dir, process=process)
        if _wait_ready(server):
            return server
        last_error = server.log_tail()
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(STOP_TIMEOUT_S)
    shutil.rmtree(base, ignore_errors=True)
    raise PostgresUnavailable(f"postgres did not start:\n{last_error}")


def _wait_ready(server: PostgresServer) -> bool:
    """Poll ``pg_isready`` until the server accepts connections; False when it exited."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        ready = subprocess.run(
            [str(server.bin_dir / "pg_isready"), "-q", *server._client_args()],
            check=False,
            timeout=10,
        )
        if ready.returncode == 0:
            return True
        time.sleep(0.05)
    return False


# One server per test process, shared by every conftest that imports the fixtures (each import
# makes a fixture definition of its own): started by the first user, stopped by the last.
_shared: PostgresServer | None = None
_users = 0
_shared_lock = threading.Lock()


@contextlib.contextmanager
def _shared_server() -> Iterator[PostgresServer]:
    global _shared, _users
    with _shared_lock:
        if _shared is None:
            _shared = start_postgres()
        _users += 1
        server = _shared
    try:
        yield server
    finally:
        with _shared_lock:
            _users -= 1
            if _users == 0 and _shared is not None:
                _shared.stop()
                _shared = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server for the whole session."""
    with _shared_server() as server:
        yield server


_default_db_lock = threading.Lock()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+asyncpg://`` URL of the database ``switchboard`` (created once)."""
    external = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    with _shared_server() as server:
        with _default_db_lock:
            exists = subprocess.run(
                [
                    str(server.bin_dir / "psql"),
                    *server._client_args(),
                    "-d",
                    "postgres",
                    "-tAc",
                    "select 1 from pg_database where datname = 'switchboard'",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            ).stdout.strip()
            url = server.url("switchboard") if exists else server.create_database("switchboard")
        yield url
