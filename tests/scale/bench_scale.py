"""``make bench-scale``: the scale-out benchmark on throw-away servers, in one command.

Starts a ``redis-server`` (no persistence) and a PostgreSQL cluster with its default durability
(``fsync`` and ``synchronous_commit`` on) on free loopback ports, migrates the database
(``switchboard db upgrade``), runs ``switchboard bench --backend redis --workers N`` for each N
asked, ``--runs`` times each (Redis flushed between runs), prints one line per run and the
median messages/s per N, and stops both servers by PID. The figures in the README's "Scaling
out" section come from this harness (the same servers and settings).

Usage::

    python -m tests.scale.bench_scale [--workers 1 2] [--runs 3] [--messages 20000]
        [--sessions 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from tests.fakes.postgres import start_postgres
from tests.fakes.redis_server import RedisServer

FIELDS = ("throughput_msgs_per_s", "latency_p50_ms", "latency_p99_ms")


def _bench(
    env: dict[str, str], redis_url: str, workers: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One ``switchboard bench --backend redis`` run; its JSON report."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "bench",
            "--backend",
            "redis",
            "--workers",
            str(workers),
            "--redis-url",
            redis_url,
            "--messages",
            str(args.messages),
            "--sessions",
            str(args.sessions),
            "--json",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the harness; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="bench-scale", description="the scale-out benchmark on throw-away servers"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="sb-bench-scale-"))
    server = RedisServer.start(base / "redis", "--save", "", "--appendonly", "no")
    postgres = start_postgres(durable=True)
    try:
        env = dict(os.environ)
        env["SWITCHBOARD_DATABASE_URL"] = postgres.create_database("bench")
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        subprocess.run(
            [sys.executable, "-m", "bot.cli", "db", "upgrade"],
            env=env,
            check=True,
            capture_output=True,
        )
        medians: dict[int, float] = {}
        for workers in args.workers:
            rates = []
            for run in range(1, args.runs + 1):
                with redis.Redis(host="127.0.0.1", port=server.port) as client:
                    client.flushall()
                report = _bench(env, server.url, workers, args)
                rates.append(report["throughput_msgs_per_s"])
                figures = " ".join(f"{k}={report[k]}" for k in FIELDS)
                print(
                    f"workers={workers} run={run} {figures} "
                    f"round_trips={report['round_trips_per_msg_upper_bound']} "
                    f"cpu_ms_per_msg={report['cpu_ms_per_msg']}",
                    flush=True,
                )
            medians[workers] = statistics.median(rates)
        for workers, rate in medians.items():
            print(f"workers={workers} median_msgs_per_s={rate}")
    finally:
        postgres.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
