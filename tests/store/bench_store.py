"""Store write benchmark: the hub's three writes per message, from many concurrent callers.

Each message is ``append_inbound`` (customer), ``append`` (the bot's reply, with an idempotency
key) and ``mark_handled``: three group-committed writes. Run::

    .venv/bin/python -m tests.store.bench_store --seconds 5              # saturate: writes/s
    .venv/bin/python -m tests.store.bench_store --rate 1000 --seconds 5  # paced: write latency

``tests/store/test_bench.py`` runs a small load through the same code and checks what it stored.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import Settings
from bot.envelope import InboundMessage, Participant, SessionKey, session_key
from bot.store import open_store
from bot.store.base import NewMessage, Role
from bot.store.sql import SqlStore


@dataclass
class BenchResult:
    """Figures of one run (latencies in seconds, one entry per write)."""

    messages: int
    elapsed_s: float
    cpu_s: float
    latencies_s: list[float] = field(default_factory=list)

    def quantile_ms(self, q: float) -> float:
        """The ``q`` quantile of write latency, in milliseconds."""
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def summary(self) -> str:
        """One line: messages/s, writes/s, p50/p99 write latency, CPU per message."""
        return (
            f"messages={self.messages} elapsed={self.elapsed_s:.2f}s"
            f" msg/s={self.messages / self.elapsed_s:.0f}"
            f" writes/s={3 * self.messages / self.elapsed_s:.0f}"
            f" p50={self.quantile_ms(0.5):.2f}ms p99={self.quantile_ms(0.99):.2f}ms"
            f" cpu/msg={self.cpu_s / max(1, self.messages) * 1e6:.0f}us"
        )


async def _one(
    store: SqlStore, i: int, key: SessionKey, latencies: list[float], run_id: str
) -> None:
    msg = InboundMessage(
        event_id=f"{run_id}-{i}",
        channel="rest",
        account="bench",
        session_key=key,
        sender=Participant(id=key),
        text=f"question number {i}: how do I connect Slack?",
    )
    t0 = time.perf_counter()
    stored = await store.append_inbound(msg)
    t1 = time.perf_counter()
    assert stored is not None
    answer = NewMessage(
        key,
        Role.BOT,
        "Open Settings, then Channels, then Slack. " * 4,
        kind="answer",
        event_id=f"reply:{msg.event_id}",
        reply_to=msg.event_id,
    )
    await store.append([answer])
    t2 = time.perf_counter()
    await store.mark_handled(key, [msg.event_id])
    latencies += (t1 - t0, t2 - t1, time.perf_counter() - t2)


async def run(
    store: SqlStore,
    *,
    seconds: float | None = None,
    messages: int | None = None,
    rate: float = 0.0,
    callers: int = 200,
    sessions: int = 1000,
) -> BenchResult:
    """Drive ``store`` until ``seconds`` pass or ``messages`` are done.

    Args:
        store: an open store.
        seconds: run time limit.
        messages: message count limit.
        rate: messages per second to start (paced, for latency); 0 runs ``callers`` closed-loop
            callers as fast as the store allows.
        callers: concurrent callers when ``rate`` is 0.
        sessions: distinct sessions the messages are spread over.
    """
    keys = [session_key("rest", "bench", dm_peer=f"u{j}") for j in range(sessions)]
    latencies: list[float] = []
    run_id = uuid.uuid4().hex[:8]  # event ids unique across runs on one database
    limit = messages if messages is not None else 10**12
    deadline = time.perf_counter() + (seconds if seconds is not None else 1e9)
    started = 0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()

    def more() -> bool:
        return started < limit and time.perf_counter() < deadline

    if rate <= 0:

        async def caller() -> None:
            nonlocal started
            while more():
                i = started
                started += 1
                await _one(store, i, keys[i % sessions], latencies, run_id)

        await asyncio.gather(*(caller() for _ in range(callers)))
    else:
        tasks: set[asyncio.Task[None]] = set()
        while more():
            due = min(limit, int((time.perf_counter() - start) * rate) + 1)
            while started < due:
                key = keys[started % sessions]
                task = asyncio.create_task(_one(store, started, key, latencies, run_id))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                started += 1
            await asyncio.sleep(0.5 / rate)
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return BenchResult(
        messages=len(latencies) // 3,
        elapsed_s=elapsed,
        cpu_s=usage.ru_utime + usage.ru_stime - cpu0,
        latencies_s=latencies,
    )


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s; 0 = saturate")
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--batch-ms", type=float, default=Settings().store_batch_ms)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp), store_batch_ms=args.batch_ms, database_url=args.database_url
        )
        store = await open_store(settings)
        try:
            result = await run(
                store,
                seconds=args.seconds,
                rate=args.rate,
                callers=args.callers,
                sessions=args.sessions,
            )
        finally:
            await store.close()
    print(result.summary())


if __name__ == "__main__":
    asyncio.run(_main())
