"""``switchboard bench``: throughput, latency and memory of the real hub path.

The bench builds a hub exactly as ``serve`` does (SQL store with group commit, memory lanes,
router, handoff, delivery with the retrying sender) but with a zero-latency scripted agent and a
channel that records when each answer reaches it. It reports:

1. throughput: messages/s for ``--messages`` messages over ``--sessions`` sessions sent as
   fast as the hub accepts them (every message gets its answer before the clock stops);
2. latency at a fixed offered load (``--rate`` messages/s): p50/p99 of ingest → answer sent;
3. memory: peak RSS with ``--idle-sessions`` sessions holding work at once, and RSS after their
   lanes went idle and were reclaimed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import psutil
from aiohttp import web

from bot.agent.scripted import ScriptedAgent
from bot.channel import HubAPI, Ignored, ParseResult
from bot.config import QueueMode, Settings, load_settings
from bot.envelope import InboundMessage, OutboundMessage, Participant, session_key


class BenchChannel:
    """Records the monotonic time each answer reaches the channel, by ``reply_to``."""

    name: ClassVar[str] = "bench"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent_at: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[None]] = {}

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Always (built explicitly by the bench)."""
        return True

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Not a parsing channel."""
        return Ignored("bench channel")

    def routes(self) -> Sequence[web.RouteDef]:
        """No HTTP routes."""
        return ()

    async def start(self, hub: HubAPI) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to disconnect."""

    async def send(self, out: OutboundMessage) -> None:
        """Record the answer's arrival."""
        if out.reply_to is None:
            return
        self.sent_at[out.reply_to] = time.monotonic()
        fut = self.waiters.pop(out.reply_to, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def expect(self, event_id: str) -> asyncio.Future[None]:
        """A future resolved when the answer to ``event_id`` is sent."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[event_id] = fut
        return fut


def _message(i: int, session: int) -> InboundMessage:
    sid = f"s{session}"
    return InboundMessage(
        event_id=f"e{i}",
        channel="bench",
        account="bench",
        session_key=session_key("bench", "bench", dm_peer=sid),
        sender=Participant(id=sid),
        text="How do I reset my password?",
    )


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def _trim() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), so RSS can fall."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


@dataclass
class BenchReport:
    """The figures ``switchboard bench`` prints."""

    messages: int
    sessions: int
    throughput_msgs_per_s: float
    latency_rate_msgs_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    idle_sessions: int
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_idle_mb: float
    lanes_after_idle: int


@contextlib.asynccontextmanager
async def _hub(
    settings: Settings, agent: ScriptedAgent
) -> AsyncIterator[tuple[Any, BenchChannel]]:
    """A started hub on ``settings``, its heap frozen as ``switchboard serve`` does."""
    from bot.compose import build_hub
    from bot.server import freeze_startup_heap

    channel = BenchChannel(settings)
    hub = await build_hub(settings, agent=agent, channels=[channel], load_knowledge=False)
    await hub.start()
    freeze_startup_heap()
    try:
        yield hub, channel
    finally:
        await hub.stop()
        gc.unfreeze()  # the next phase's hub must not keep this one's cycles alive


async def _throughput(settings: Settings, messages: int, sessions: int) -> float:
    async with _hub(settings, ScriptedAgent()) as (hub, channel):
        msgs = [_message(i, i % sessions) for i in range(messages)]
        done = [channel.expect(m.event_id) for m in msgs]
        sem = asyncio.Semaphore(512)

        async def send(m: InboundMessage) -> None:
            async with sem:
                await hub.ingest(m)

        t0 = time.perf_counter()
        await asyncio.gather(*(send(m) for m in msgs))
        await asyncio.gather(*done)
        return messages / (time.perf_counter() - t0)


async def _latency(settings: Settings, rate: float, seconds: float) -> list[float]:
    async with _hub(settings, ScriptedAgent()) as (hub, channel):
        n = int(rate * seconds)
        sessions = max(1, int(rate))
        ingested: dict[str, float] = {}
        waits: list[asyncio.Future[None]] = []
        tasks: list[asyncio.Task[Any]] = []
        t0 = time.monotonic()
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            m = _message(10_000_000 + i, i % sessions)
            waits.append(channel.expect(m.event_id))
            ingested[m.event_id] = time.monotonic()
            tasks.append(asyncio.create_task(hub.ingest(m)))
        await asyncio.gather(*tasks)
        await asyncio.gather(*waits)
        return [(channel.sent_at[e] - t) * 1000.0 for e, t in ingested.items()]


async def _memory(settings: Settings, sessions: int) -> tuple[float, float, float, int]:
    async with _hub(settings, ScriptedAgent(delay_s=0.2)) as (hub, channel):
        _trim()
        before = _rss_mb()
        msgs = [_message(20_000_000 + i, 1_000_000 + i) for i in range(sessions)]
        done = [channel.expect(m.event_id) for m in msgs]
        peak = before
        sem = asyncio.Semaphore(512)

        async def send(m: InboundMessage) -> None:
            async with sem:
                await hub.ingest(m)

        sender = asyncio.gather(*(send(m) for m in msgs))
        waiter = asyncio.gather(*done)
        while not waiter.done():
            peak = max(peak, _rss_mb())
            await asyncio.sleep(0.05)
        await sender
        await waiter
        peak = max(peak, _rss_mb())
        deadline = time.monotonic() + settings.lane_idle_s + 10
        while hub.lanes.stats().lanes and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # the lanes expose no event for reclamation
        del msgs, done, sender, waiter
        channel.sent_at.clear()
        _trim()
        return before, peak, _rss_mb(), hub.lanes.stats().lanes


async def run_bench(args: argparse.Namespace) -> int:
    """Run the three phases and print the report (a table, or JSON with ``--json``)."""
    base = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="sb-bench-"))
    base.mkdir(parents=True, exist_ok=True)

    def settings_for(phase: str) -> Settings:
        d = base / phase
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return load_settings(
            args.config,
            data_dir=d,
            queue_mode=QueueMode.FOLLOWUP,
            max_concurrent_turns=256,
            lane_cap=100_000,  # measure the hot path, not overflow folding
            lane_idle_s=1.0,
            log_level="WARNING",
        )

    import logging

    logging.getLogger().setLevel(logging.WARNING)
    throughput = await _throughput(settings_for("throughput"), args.messages, args.sessions)
    lat = sorted(await _latency(settings_for("latency"), args.rate, 5.0))
    before, peak, after, lanes = await _memory(settings_for("memory"), args.idle_sessions)
    report = BenchReport(
        messages=args.messages,
        sessions=args.sessions,
        throughput_msgs_per_s=round(throughput, 1),
        latency_rate_msgs_per_s=args.rate,
        latency_p50_ms=round(statistics.median(lat), 3),
        latency_p99_ms=round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3),
        latency_max_ms=round(lat[-1], 3),
        idle_sessions=args.idle_sessions,
        rss_before_mb=round(before, 1),
        rss_peak_mb=round(peak, 1),
        rss_after_idle_mb=round(after, 1),
        lanes_after_idle=lanes,
    )
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="switchboard bench (one process, memory lanes, SQLite store)")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in asdict(report).items():
            table.add_row(key, str(value))
        Console().print(table)
    if not args.data_dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


# --- scaled out: Redis lanes, worker processes ---------------------------------------------
_ROUND_TRIP_COMMANDS = ("evalsha", "eval", "publish", "set", "exists")


async def _commandstats(client: Any) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(v.get("calls", 0))
        for name, v in stats.items()
        if isinstance(v, dict)
    }


def _cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


async def _component_pids(client: Any, database_url: str) -> dict[str, list[int]]:
    """Process ids of the Redis server and of every PostgreSQL process (server on this host).

    Redis reports its ``process_id`` (``INFO server``); PostgreSQL lists its backends and
    background processes in ``pg_stat_activity``.
    """
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    info = await client.info("server")
    engine = create_async_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT pid FROM pg_stat_activity"))
            pg = [int(r[0]) for r in rows]
    finally:
        await engine.dispose()
    return {"redis": [int(info["process_id"])], "postgres": pg}


@dataclass
class RedisBenchReport:
    """The figures of ``switchboard bench --backend redis``.

    ``cpu_ms_per_msg`` is CPU time (user + system, milliseconds) per message of each component
    over the timed run: ``ingress`` (this process), ``workers`` (all worker processes),
    ``redis`` (the server) and ``postgres`` (its processes; the database must be on this host
    for the figure to mean anything).
    """

    workers: int
    messages: int
    sessions: int
    throughput_msgs_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    redis_commands_per_msg: float
    script_calls_per_msg: float
    publish_per_msg: float
    round_trips_per_msg_upper_bound: float
    cpu_ms_per_msg: dict[str, float]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_workers(
    n: int, settings: Settings, base: Path, redis_url: str
) -> list[tuple[Any, int]]:
    import subprocess
    import sys

    procs = []
    env = dict(os.environ)
    env.update(
        {
            "SWITCHBOARD_LANE_BACKEND": "redis",
            "SWITCHBOARD_REDIS_URL": redis_url,
            "SWITCHBOARD_DATABASE_URL": settings.resolved_database_url,
            "SWITCHBOARD_AGENT": "scripted",
            "SWITCHBOARD_QUEUE_MODE": "followup",
            "SWITCHBOARD_MAX_CONCURRENT_TURNS": str(settings.max_concurrent_turns),
            "SWITCHBOARD_LANE_CAP": str(settings.lane_cap),
            "SWITCHBOARD_SAMPLE_KB": "false",
            "SWITCHBOARD_LOG_LEVEL": "ERROR",  # hub.no_channel warnings: no bench channel
        }
    )
    for i in range(n):
        port = _free_port()
        d = base / f"worker{i}"
        d.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "bot.cli",
            "worker",
            "--port",
            str(port),
            "--data-dir",
            str(d),
        ]
        procs.append((subprocess.Popen(cmd, env=env), port))
    return procs


async def _wait_ready(ports: Sequence[int], timeout_s: float = 60.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        for port in ports:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker on port {port} did not become ready")
                await asyncio.sleep(0.1)


async def run_redis_bench(args: argparse.Namespace) -> int:
    """``switchboard bench --backend redis --workers N --redis-url URL``.

    This process is the ingress (``consume=False``, the in-process door ``hub.ingest``); N
    ``switchboard worker`` processes with the scripted agent run the turns. Needs a Redis
    started by the user (``--redis-url``; the bench writes lanes under the ``sb`` prefix, use a
    dedicated server) and a shared store (``SWITCHBOARD_DATABASE_URL``, PostgreSQL). Latency is
    ingest → the answer's event reaching this process through the Redis event feed (what a
    live viewer sees). Redis figures are ``INFO commandstats`` deltas over the run.
    """
    from bot.compose import build_hub
    from bot.errors import ConfigError
    from bot.lanes.redis import connect

    if not args.redis_url:
        raise ConfigError("--backend redis needs --redis-url (a Redis you started)")
    base = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="sb-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    settings = load_settings(
        args.config,
        data_dir=base,
        lane_backend="redis",
        redis_url=args.redis_url,
        agent="scripted",
        queue_mode=QueueMode.FOLLOWUP,
        max_concurrent_turns=256,
        lane_cap=100_000,
        log_level="WARNING",
    )
    if not settings.database_url or settings.database_url.startswith("sqlite"):
        raise ConfigError("--backend redis needs a shared store: set SWITCHBOARD_DATABASE_URL")
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    hub = await build_hub(settings, consume=False, channels=[], load_knowledge=False)
    workers = _spawn_workers(args.workers, settings, base, args.redis_url)
    client = connect(args.redis_url)
    try:
        await _wait_ready([p for _, p in workers])
        await hub.start()
        run = f"{int(time.time())}"
        msgs = [
            InboundMessage(
                event_id=f"r{run}-{i}",
                channel="bench",  # workers have no such channel: answers are stored, not sent
                account="bench",
                session_key=session_key("bench", "bench", dm_peer=f"r{run}-s{i % args.sessions}"),
                sender=Participant(id=f"s{i % args.sessions}"),
                text="How do I reset my password?",
            )
            for i in range(args.messages)
        ]
        pending: dict[str, list[float]] = {}
        latencies: list[float] = []
        done = asyncio.Event()

        async def watch() -> None:
            async with hub.events.subscribe(None, maxsize=1_000_000) as sub:
                ready.set()
                async for event in sub:
                    if event.type != "message" or event.data.get("role") != "bot":
                        continue
                    times = pending.get(event.session_key)
                    if times:
                        latencies.append((time.monotonic() - times.pop(0)) * 1000.0)
                        if len(latencies) == len(msgs):
                            done.set()

        ready = asyncio.Event()
        watcher = asyncio.create_task(watch())
        await ready.wait()
        # Below the lane client's connection pool (redis-py's default: 100 connections).
        sem = asyncio.Semaphore(64)

        async def send(m: InboundMessage) -> None:
            async with sem:
                pending.setdefault(m.session_key, []).append(time.monotonic())
                await hub.ingest(m)

        assert settings.database_url is not None
        pids = await _component_pids(client, settings.database_url)
        pids["ingress"] = [os.getpid()]
        pids["workers"] = [proc.pid for proc, _ in workers]
        cpu_before = {name: _cpu_seconds(p) for name, p in pids.items()}
        before = await _commandstats(client)
        t0 = time.perf_counter()
        await asyncio.gather(*(send(m) for m in msgs))
        # Completion is read from the store: pub/sub events are hints a lagging viewer may miss.
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine

        assert settings.database_url is not None
        engine = create_async_engine(settings.database_url, pool_size=1)
        count = sa.text("SELECT count(*) FROM messages WHERE role = 'bot' AND session_key LIKE :p")
        deadline = time.monotonic() + max(60.0, args.messages / 50)
        while not done.is_set() and time.monotonic() < deadline:
            async with engine.connect() as conn:
                answered = int(await conn.scalar(count, {"p": f"bench:bench:dm:r{run}-%"}) or 0)
            if answered >= len(msgs):
                break
            await asyncio.sleep(0.25)  # a count(*) per poll: cheap, not free
        else:
            if not done.is_set():
                raise TimeoutError("not every message was answered in time")
        elapsed = time.perf_counter() - t0
        cpu_ms = {
            name: round((_cpu_seconds(p) - cpu_before[name]) * 1000.0 / len(msgs), 3)
            for name, p in pids.items()
        }
        await engine.dispose()
        await asyncio.sleep(0.2)  # the last releases
        after = await _commandstats(client)
        watcher.cancel()
        n = len(msgs)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        delta.pop("info", None)
        lat = sorted(latencies) or [float("nan")]
        report = RedisBenchReport(
            workers=args.workers,
            messages=n,
            sessions=args.sessions,
            throughput_msgs_per_s=round(n / elapsed, 1),
            latency_p50_ms=round(statistics.median(lat), 2),
            latency_p99_ms=round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
            redis_commands_per_msg=round(sum(delta.values()) / n, 2),
            script_calls_per_msg=round((delta.get("evalsha", 0) + delta.get("eval", 0)) / n, 2),
            publish_per_msg=round(delta.get("publish", 0) / n, 2),
            round_trips_per_msg_upper_bound=round(
                sum(delta.get(c, 0) for c in _ROUND_TRIP_COMMANDS) / n, 2
            ),
            cpu_ms_per_msg=cpu_ms,
        )
    finally:
        await hub.stop()
        await client.aclose()
        for proc, _ in workers:
            proc.terminate()
        for proc, _ in workers:
            proc.wait(timeout=30)
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"switchboard bench (redis lanes, {args.workers} worker processes)")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in asdict(report).items():
            table.add_row(key, str(value))
        Console().print(table)
    return 0
