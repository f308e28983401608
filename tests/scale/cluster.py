"""A scaled-out Switchboard on one machine: ingress and worker subprocesses, a REST client.

Processes run ``python -m bot.cli serve --workers 0`` and ``python -m bot.cli worker`` with
``SWITCHBOARD_LANE_BACKEND=redis``, PostgreSQL as the store and the zero-latency scripted agent
(``SWITCHBOARD_AGENT=scripted``), and are stopped by their own PIDs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bot.config import load_settings
from bot.store.sql import SqlStore
from tests.fakes.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0  # three processes importing litellm (~4 s of CPU each) on 2 cores


@dataclass
class Proc:
    """One hub process."""

    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL by PID (a crash: no drain, no ack, leases left to expire)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM by PID (graceful drain), SIGKILL after 15 s."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Deployment:
    """Settings shared by the processes of one test, and the processes started."""

    base: Path
    redis: RedisServer
    database_url: str
    procs: list[Proc] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a hub process."""
        env = dict(os.environ)
        env.update(
            {
                "SWITCHBOARD_LANE_BACKEND": "redis",
                "SWITCHBOARD_REDIS_URL": self.redis.url,
                "SWITCHBOARD_DATABASE_URL": self.database_url,
                "SWITCHBOARD_AGENT": "scripted",
                "SWITCHBOARD_QUEUE_MODE": "followup",
                "SWITCHBOARD_LANE_LEASE_S": "2",
                "SWITCHBOARD_MAX_CONCURRENT_TURNS": "64",
                "SWITCHBOARD_LANE_CAP": "1000",
                "SWITCHBOARD_SAMPLE_KB": "false",
                "SWITCHBOARD_LOG_LEVEL": "WARNING",
                "SWITCHBOARD_DRAIN_TIMEOUT_S": "2",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            }
        )
        env.pop("SWITCHBOARD_API_KEYS", None)
        env.update(self.extra_env)
        env.update(extra)
        return env

    async def create_schema(self) -> None:
        """Create the tables once, before several processes open the store."""
        store = SqlStore(load_settings(None, database_url=self.database_url))
        await store.open()
        await store.close()

    def start(self, name: str, *args: str) -> Proc:
        """Start ``python -m bot.cli ARGS --port P`` (not waiting for readiness)."""
        port = free_port()
        log = self.base / f"{name}.log"
        data = self.base / name
        data.mkdir(parents=True, exist_ok=True)
        popen = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *args, "--port", str(port), "--data-dir", str(data)],
            cwd=ROOT,
            env=self.env(),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        proc = Proc(name, port, popen, log)
        self.procs.append(proc)
        return proc

    async def wait_ready(self, *procs: Proc) -> None:
        """Wait until each process answers ``GET /readyz`` with 200."""
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            for proc in procs:
                while True:
                    if proc.popen.poll() is not None:
                        raise RuntimeError(f"{proc.name} exited:\n{proc.log.read_text()[-3000:]}")
                    try:
                        async with http.get(f"http://127.0.0.1:{proc.port}/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{proc.name} not ready:\n{proc.log.read_text()[-3000:]}"
                        )
                    await asyncio.sleep(0.1)

    def log_lines(self, needle: str, limit: int = 60) -> str:
        """The lines of every process log that contain ``needle`` (a failure's evidence)."""
        out: list[str] = []
        for proc in self.procs:
            if proc.log.exists():
                lines = proc.log.read_text(errors="replace").splitlines()
                out += [f"{proc.name}: {line[:400]}" for line in lines if needle in line]
        return "\n".join(out[-limit:])

    def stop_all(self) -> None:
        """Stop every process still running (SIGTERM, then SIGKILL)."""
        for proc in self.procs:
            proc.stop()

    async def count_bot_replies(self) -> int:
        """Bot answers stored so far."""
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                n = await conn.scalar(sa.text("SELECT count(*) FROM messages WHERE role = 'bot'"))
        finally:
            await engine.dispose()
        return int(n or 0)

    async def wait_replies(self, n: int, timeout_s: float) -> int:
        """Wait until ``n`` bot answers are stored; returns the count reached."""
        deadline = time.monotonic() + timeout_s
        count = 0
        engine = create_async_engine(self.database_url)
        try:
            while time.monotonic() < deadline:
                async with engine.connect() as conn:
                    count = int(
                        await conn.scalar(
                            sa.text("SELECT count(*) FROM messages WHERE role = 'bot'")
                        )
                        or 0
                    )
                if count >= n:
                    return count
                await asyncio.sleep(0.2)
        finally:
            await engine.dispose()
        return count


@dataclass
class RestDriver:
    """Customers on the REST channel: each conversation sends its messages one after another,
    retrying 503s and connection errors as a platform would (same ``event_id``)."""

    port: int
    conversations: int
    per_conversation: int
    sent: int = 0
    retries: int = 0

    def event_id(self, c: int, i: int) -> str:
        """The event id of message ``i`` of conversation ``c``."""
        return f"c{c}-m{i:03d}"

    async def run(self) -> None:
        """Send everything; returns once every message was accepted (202)."""
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(*(self._conversation(http, c) for c in range(self.conversations)))

    async def _conversation(self, http: aiohttp.ClientSession, c: int) -> None:
        url = f"http://127.0.0.1:{self.port}/api/v1/conversations/conv{c}/messages"
        for i in range(self.per_conversation):
            body = {
                "text": f"question {i}",
                "user": {"id": f"u{c}"},
                "event_id": self.event_id(c, i),
            }
            delay = 0.05
            while True:
                try:
                    async with http.post(url, json=body) as r:
                        if r.status == 202:
                            break
                        if r.status != 503:
                            raise AssertionError(f"POST answered {r.status}: {await r.text()}")
                except (TimeoutError, aiohttp.ClientError):
                    pass
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            self.sent += 1

    async def transcript(self, http: aiohttp.ClientSession, c: int) -> list[dict[str, Any]]:
        """Every message of conversation ``c`` through ``GET .../messages``."""
        url = f"http://127.0.0.1:{self.port}/api/v1/conversations/conv{c}/messages"
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            async with http.get(url, params={"after": after}) as r:
                assert r.status == 200, await r.text()
                page = (await r.json())["messages"]
            if not page:
                return out
            out += page
            after = page[-1]["seq"]

    async def missing(self) -> dict[int, list[str]]:
        """The event ids without a bot reply, by conversation (empty when all are answered)."""
        out: dict[int, list[str]] = {}
        async with aiohttp.ClientSession() as http:
            for c in range(self.conversations):
                replied = {
                    m["reply_to"] for m in await self.transcript(http, c) if m["role"] == "bot"
                }
                lost = [
                    self.event_id(c, i)
                    for i in range(self.per_conversation)
                    if self.event_id(c, i) not in replied
                ]
                if lost:
                    out[c] = lost
        return out

    async def check(self) -> None:
        """Every customer message has exactly one bot reply, in the order they were sent."""
        async with aiohttp.ClientSession() as http:
            for c in range(self.conversations):
                messages = await self.transcript(http, c)
                expected = [self.event_id(c, i) for i in range(self.per_conversation)]
                customer = [m["text"] for m in messages if m["role"] == "customer"]
                replies = [m["reply_to"] for m in messages if m["role"] == "bot"]
                others = [m for m in messages if m["role"] not in ("customer", "bot")]
                assert customer == [f"question {i}" for i in range(self.per_conversation)], c
                assert replies == expected, (c, replies)
                assert not others, (c, others)
