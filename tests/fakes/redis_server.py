"""Real ``redis-server`` processes for tests: one standalone server or a 3-master cluster.

Servers listen on free loopback ports with their own temporary directory and are stopped by
their own PIDs (never by name). Debian's ``redis-server`` and ``redis-tools`` provide the
binaries (``make test`` installs them); a missing binary is an error, never a skip.

Usage::

    server = RedisServer.start(tmp_path)            # redis://127.0.0.1:PORT/0
    server.stop(); server.restart()                 # same port, same dir (AOF survives)
    cluster = RedisClusterProcs.start(tmp_path)     # cluster.url: "redis+cluster://h:p,h:p,h:p"
    cluster.stop()
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

_HOST = "127.0.0.1"
_START_TIMEOUT_S = 10.0


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian's redis-server and redis-tools")
    return path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free TCP port on 127.0.0.1 (and ``port + 10000`` free too when ``with_bus``).

    Raises:
        RuntimeError: when no such port is found in 200 tries.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((_HOST, 0))
            port: int = s.getsockname()[1]
        if not with_bus:
            return port
        if port + 10000 <= 65535 and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One ``redis-server`` process on 127.0.0.1.

    Attributes:
        port: its TCP port.
        directory: its working directory (RDB/AOF files, cluster config).
        args: extra command-line arguments (``--appendonly yes``...).
        proc: the running process, None while stopped.
    """

    port: int
    directory: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls, directory: Path, *args: str, port: int | None = None, with_bus: bool = False
    ) -> Self:
        """Start a server in ``directory`` (created) and wait until it answers PING.

        Raises:
            RuntimeError: when the binary is missing or the server does not come up in 10 s.
        """
        directory.mkdir(parents=True, exist_ok=True)
        server = cls(port or free_port(with_bus=with_bus), directory, list(args))
        server.restart()
        return server

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{_HOST}:{self.port}"

    def restart(self) -> None:
        """(Re)start the process on the same port and directory; waits for PING.

        Raises:
            RuntimeError: when the server does not answer within 10 s.
        """
        if self.proc is not None:
            raise RuntimeError("server is running")
        cmd = [
            _binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            _HOST,
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.directory / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process by its PID (SIGTERM, or SIGKILL with ``kill``) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def cli(self, *args: str) -> str:
        """Run ``redis-cli -p PORT ARGS...`` and return its output."""
        out = subprocess.run(
            [_binary("redis-cli"), "-h", _HOST, "-p", str(self.port), *args],
            capture_output=True,
            check=True,
            timeout=30,
        )
        return out.stdout.decode()


@dataclass
class RedisClusterProcs:
    """A 3-master Redis Cluster (no replicas) of :class:`RedisServer` processes.

    Attributes:
        nodes: the three servers.
    """

    nodes: list[RedisServer]

    @classmethod
    def start(cls, directory: Path, masters: int = 3) -> Self:
        """Start ``masters`` cluster-enabled servers and join them with ``redis-cli --cluster
        create``; waits until every node reports ``cluster_state:ok``.

        Raises:
            RuntimeError: when a node does not start or the cluster does not become ok in 20 s.
        """
        nodes: list[RedisServer] = []
        cluster = cls(nodes)
        try:
            for i in range(masters):
                nodes.append(
                    RedisServer.start(
                        directory / f"node{i}",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                        with_bus=True,
                    )
                )
            subprocess.run(
                [
                    _binary("redis-cli"),
                    "--cluster",
                    "create",
                    *(n.address for n in nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                check=True,
                timeout=60,
            )
            deadline = time.monotonic() + 20
            while not all("cluster_state:ok" in n.cli("cluster", "info") for n in nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("redis cluster did not reach cluster_state:ok")  # noqa: TRY301
                time.sleep(0.05)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3``."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def stop(self) -> None:
        """Stop every node by its PID."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
