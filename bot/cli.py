"""The ``switchboard`` command line.

Commands: ``serve``, ``worker``, ``ingest``, ``chat``, ``kb eval``, ``kb answers``, ``parse``,
``agents add|list|disable|enable|set-role|reset-password`` (:mod:`bot.agents_cli`),
``teams add|set|list|remove|capacity`` and ``sla add|list|remove`` (:mod:`bot.teams_cli`),
``db upgrade``, ``bench``, ``redact``, ``privacy bench`` (:mod:`bot.privacy.cli`),
``audit verify|export``, ``privacy export|erase``, ``customer export|erase``
(:mod:`bot.data_cli`),
``doctor`` (:mod:`bot.doctor_cli`).
Every command takes ``--data-dir`` and ``--config``; settings also come from ``SWITCHBOARD_*``
environment variables (see :mod:`bot.config`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from bot import tracing
from bot.config import Settings, load_settings
from bot.errors import ConfigError, SwitchboardError

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="state folder (./.switchboard)")
    p.add_argument("--config", type=Path, default=None, help="a switchboard.yaml")


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(args.config, data_dir=args.data_dir, **extra)


def _answers_parser(kb_sub: Any) -> None:
    """``kb answers add|import|list|remove`` (run by :mod:`knowledge.commands`)."""
    p = kb_sub.add_parser("answers", help="curated answers served before any generation")
    sub = p.add_subparsers(dest="answers_command", required=True)
    pa = sub.add_parser("add", help="save an approved answer for a question")
    _common(pa)
    pa.add_argument("--question", action="append", required=True, help="a phrasing (repeat)")
    text = pa.add_mutually_exclusive_group(required=True)
    text.add_argument("--answer", help="the answer text (CommonMark)")
    text.add_argument("--answer-file", type=Path, help="read the answer text from a file")
    pa.add_argument("--source", action="append", default=[], help="doc id or JSON (repeat)")
    pa.add_argument("--id", default=None, help="id to give it (replaces a stored one)")
    pi = sub.add_parser("import", help="save the answers of a JSONL file")
    _common(pi)
    pi.add_argument("file", type=Path)
    pl = sub.add_parser("list", help="list the stored answers")
    _common(pl)
    pl.add_argument("--json", action="store_true", help="one JSON object per line")
    pr = sub.add_parser("remove", help="delete a stored answer")
    _common(pr)
    pr.add_argument("id")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the hub (HTTP server, channels, lanes, agent)")
    _common(p)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument(
        "--no-sample-kb", action="store_true", help="do not ingest the bundled docs/ at start"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="lane consumers: 0 = ingress only (needs redis lanes), 1 = in this process "
        "(default), N > 1 = this process plus N-1 `switchboard worker` processes",
    )

    p = sub.add_parser("worker", help="run lane consumers only (needs redis lanes)")
    _common(p)
    p.add_argument("--host", default=None, help="address of /healthz, /readyz, /metrics")
    p.add_argument("--port", type=int, default=None)

    p = sub.add_parser("ingest", help="add documents to the knowledge base")
    _common(p)
    p.add_argument("paths", nargs="*", type=Path, help="files and folders (md, html, txt, pdf...)")
    p.add_argument("--base-url", default=None, help="URL prefix for citations of files")
    p.add_argument("--sitemap", action="append", default=[], help="read every page of a sitemap")
    p.add_argument("--url", action="append", default=[], help="read one web page (repeat)")
    p.add_argument("--watch", action="store_true", help="keep ingesting changes until Ctrl-C")
    p.add_argument(
        "--every", type=float, default=3600.0, help="seconds between re-reads of web sources"
    )

    p = sub.add_parser("chat", help="talk to the bot in the terminal")
    _common(p)
    p.add_argument("--user", default="terminal-user")

    p = sub.add_parser("kb", help="knowledge base tools")
    kb_sub = p.add_subparsers(dest="kb_command", required=True)
    pe = kb_sub.add_parser("eval", help="recall@1/3/5 and MRR@10 on annotated questions")
    _common(pe)
    pe.add_argument("qa", type=Path)
    pe.add_argument("--json", action="store_true", help="print one JSON object")
    _answers_parser(kb_sub)
    pb = kb_sub.add_parser("bench", help="ingest chunks/s and hybrid query p50/p95 at N chunks")
    _common(pb)
    pb.add_argument("--chunks", type=int, action="append", help="index size (repeat)")
    pb.add_argument("--ingest-sample", type=int, default=1000, help="chunks ingested end to end")
    pb.add_argument("--queries", type=int, default=200, help="queries per measurement")
    pb.add_argument("--concurrency", type=int, default=20, help="queries in flight")
    pb.add_argument("--runs", type=int, default=1, help="repeat the measurements")
    pb.add_argument("--source", type=Path, default=None, help="folder of kb.jsonl and qa.jsonl")
    pb.add_argument("--work-dir", type=Path, default=Path(".bench/kb"), help="indexes, cache")
    pb.add_argument("--json", action="store_true", help="print one JSON line per run")

    p = sub.add_parser("parse", help="run a channel's parser on recorded payloads")
    _common(p)
    p.add_argument("channel")
    p.add_argument("files", nargs="+", type=Path)

    from bot.agents_cli import add_parsers as add_agents_parsers

    add_agents_parsers(sub, _common)

    from bot.teams_cli import add_parsers as add_teams_parsers

    add_teams_parsers(sub, _common)

    p = sub.add_parser("db", help="database schema")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    pu = db_sub.add_parser("upgrade", help="apply the Alembic migrations (to head by default)")
    _common(pu)
    pu.add_argument("revision", nargs="?", default="head")

    p = sub.add_parser("bench", help="measure the hub's throughput, latency and memory")
    _common(p)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--sessions", type=int, default=1_000)
    p.add_argument("--rate", type=float, default=1_000.0, help="messages/s of the latency run")
    p.add_argument("--idle-sessions", type=int, default=10_000)
    p.add_argument("--json", action="store_true")
    p.add_argument("--backend", choices=("memory", "redis"), default="memory", help="lane backend")
    p.add_argument("--redis-url", default=None, help="a running Redis (--backend redis)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (--backend redis)")

    from bot.data_cli import add_parsers as add_data_parsers
    from bot.doctor_cli import add_parsers as add_doctor_parsers

    add_doctor_parsers(sub, _common)

    from bot.privacy.cli import add_parsers as add_privacy_parsers

    add_data_parsers(sub, add_privacy_parsers(sub, _common), _common)
    return parser


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run ``coro`` on uvloop (a faster libuv event loop) where it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``switchboard``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "ingest":
            return asyncio.run(_ingest(args))
        if args.command == "chat":
            return asyncio.run(_chat(args))
        if args.command == "kb" and args.kb_command == "answers":
            from knowledge.commands import answers_command

            return answers_command(args, _settings(args))
        if args.command == "kb" and args.kb_command == "bench":
            from knowledge.bench import bench_command

            return asyncio.run(bench_command(args, _settings(args)))
        if args.command == "kb":
            return asyncio.run(_kb_eval(args))
        if args.command == "parse":
            return _parse(args)
        if args.command == "agents":
            from bot.agents_cli import run as run_agents

            return asyncio.run(run_agents(args, _settings(args)))
        if args.command in ("teams", "sla"):
            from bot.teams_cli import run as run_teams

            return asyncio.run(run_teams(args, _settings(args)))
        if args.command == "db":
            return asyncio.run(_db_upgrade(args))
        if args.command in ("audit", "customer") or (
            args.command == "privacy" and args.privacy_command in ("export", "erase")
        ):
            from bot.data_cli import run as run_data

            return asyncio.run(run_data(args, _settings(args)))
        if args.command == "doctor":
            from bot.doctor_cli import run as run_doctor

            return asyncio.run(run_doctor(args, _settings(args)))
        if args.command in ("redact", "privacy"):
            from bot.privacy.cli import run as run_privacy

            return run_privacy(args)
        if args.command == "bench":
            if args.backend == "redis":
                from bot.bench import run_redis_bench

                return _run(run_redis_bench(args))
            from bot.bench import run_bench

            return _run(run_bench(args))
    except SwitchboardError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _serve(args: argparse.Namespace) -> int:
    from bot.observability import configure_logging
    from bot.server import check_bind

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    tracing.configure(settings, role="serve" if settings.workers >= 1 else "ingress")
    check_bind(settings.host, api_keys_configured=bool(settings.api_keys))
    if settings.workers < 0:
        raise ConfigError("--workers must be 0 or more")
    if settings.workers != 1 and settings.lane_backend != "redis":
        raise ConfigError(
            f"--workers {settings.workers} needs shared lanes: "
            "set SWITCHBOARD_LANE_BACKEND=redis and SWITCHBOARD_REDIS_URL"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    docs = settings.sample_kb_dir
    sample = settings.sample_kb and not args.no_sample_kb and docs.is_dir()
    return _run(_serve_hub(settings, docs if sample else None, args))


async def _serve_hub(
    settings: Settings, sample_docs: Path | None, args: argparse.Namespace
) -> int:
    from bot.compose import build_hub
    from bot.server import run_server

    hub = await build_hub(settings, consume=settings.workers >= 1)
    if sample_docs is not None and hub.retriever is not None:
        ingest = getattr(hub.retriever, "ingest", None)
        if ingest is not None:
            # Citations of the sample docs link to the pages the hub serves at /docs/.
            base = settings.public_url or f"http://{settings.host}:{settings.port}"
            report = await ingest([sample_docs], base_url=base.rstrip("/") + "/docs/")
            print(
                f"knowledge base: {report.documents_added} added, "
                f"{report.documents_updated} updated, {report.documents_unchanged} unchanged",
                file=sys.stderr,
            )
    children = [await _spawn_worker(args) for _ in range(settings.workers - 1)]
    try:
        await run_server(hub, settings.host, settings.port)
    finally:
        tracing.shutdown()
        for child in children:
            if child.returncode is None:
                child.terminate()
        for child in children:
            await child.wait()
    return 0


async def _spawn_worker(args: argparse.Namespace) -> asyncio.subprocess.Process:
    """Start ``switchboard worker`` as a child (same config and environment, free port)."""
    cmd = [sys.executable, "-m", "bot.cli", "worker", "--host", "127.0.0.1", "--port", "0"]
    if args.config is not None:
        cmd += ["--config", str(args.config)]
    if args.data_dir is not None:
        cmd += ["--data-dir", str(args.data_dir)]
    return await asyncio.create_subprocess_exec(*cmd)


def _worker(args: argparse.Namespace) -> int:
    from bot.observability import configure_logging

    settings = _settings(args, host=args.host, port=args.port)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    tracing.configure(settings, role="worker")
    if settings.lane_backend != "redis":
        raise ConfigError(
            "switchboard worker needs shared lanes: "
            "set SWITCHBOARD_LANE_BACKEND=redis and SWITCHBOARD_REDIS_URL"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return _run(_worker_hub(settings))


async def _worker_hub(settings: Settings) -> int:
    from bot.worker import serve_worker

    try:
        await serve_worker(settings)
    finally:
        tracing.shutdown()
    return 0


async def _ingest(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bot.compose import knowledge_base
    from knowledge.sync import Sources, SyncReport, ingest_sources, watch_sources

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sources = Sources(tuple(args.paths), tuple(args.sitemap), tuple(args.url), args.base_url)
    if not sources.paths and not sources.web:
        print("switchboard: give files, folders, --sitemap or --url", file=sys.stderr)
        return 2
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"switchboard: no such file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2

    def summary(report: SyncReport) -> str:
        r = report.report
        line = (
            f"{r.documents_added} added, {r.documents_updated} updated, "
            f"{r.documents_unchanged} unchanged, {r.documents_empty} empty, "
            f"{r.documents_removed} removed (gone from their source); "
            f"{r.chunks_written} chunks written in {r.seconds:.1f} s"
        )
        for url, reason in report.failed_pages:
            line += f"\n  skipped {url}: {reason}"
        return line

    kb = await knowledge_base(settings)
    try:
        if args.watch:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            import signal

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            print("watching for changes (Ctrl-C stops)", file=sys.stderr)
            await watch_sources(
                kb,
                sources,
                stop=stop,
                every_s=args.every,
                on_sync=lambda kind, report: print(f"{kind}: {summary(report)}", flush=True),
            )
            return 0
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()
        ) as bar:
            task = bar.add_task("ingesting", total=None)

            def progress(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, total=total, description=name[-40:])

            result = await ingest_sources(kb, sources, progress=progress)
    finally:
        await kb.close()
    print(summary(result))
    return 0


async def _kb_eval(args: argparse.Namespace) -> int:
    from bot.compose import knowledge_base

    settings = _settings(args)
    kb = await knowledge_base(settings)
    try:
        report = await kb.evaluate(args.qa)
    finally:
        await kb.close()
    figures = {
        "questions": report.questions,
        "recall@1": report.recall_at_1,
        "recall@3": report.recall_at_3,
        "recall@5": report.recall_at_5,
        "MRR@10": report.mrr_at_10,
        "mean query ms": report.mean_query_ms,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"knowledge base evaluation: {args.qa.name}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in figures.items():
            table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
        Console().print(table)
    return 0


def _parse(args: argparse.Namespace) -> int:
    from bot.channel import Parsed
    from bot.registry import channel_class

    settings = _settings(args)
    try:
        cls = channel_class(args.channel)
    except KeyError:
        print(f"switchboard: unknown channel {args.channel!r}", file=sys.stderr)
        return 2
    for path in args.files:
        line: dict[str, Any] = {"file": str(path)}
        try:
            result = cls.parse_payload(path.read_bytes(), filename=path.name, settings=settings)
        except SwitchboardError as exc:
            line["error"] = str(exc)
        except OSError as exc:
            line["error"] = f"cannot read: {exc.strerror}"
        else:
            if isinstance(result, Parsed):
                line["envelope"] = result.envelope.model_dump(mode="json", exclude={"raw"})
            else:
                line["ignored"] = result.reason
        print(json.dumps(line, ensure_ascii=False))
    return 0


async def _db_upgrade(args: argparse.Namespace) -> int:
    from bot.store.migrate import upgrade

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    revision = await upgrade(settings, args.revision)
    print(f"database at revision {revision}")
    return 0


async def _chat(args: argparse.Namespace) -> int:
    from bot.compose import build_chat_hub

    settings = _settings(args, log_level="WARNING")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    hub, channel = await build_chat_hub(settings)
    await hub.start()
    loop = asyncio.get_running_loop()
    conversation = f"terminal-{os.getpid()}"
    print("Type a message (Ctrl-D to quit).")
    try:
        while True:
            try:
                text = await loop.run_in_executor(None, input, "you> ")
            except EOFError:
                break
            if not text.strip():
                continue
            receipt = await channel.push_message(
                text, user_id=args.user, conversation=conversation
            )
            try:
                out = await channel.pop_message(receipt.session_key, timeout_s=120.0)
            except TimeoutError:
                print("(no answer yet: a person may pick this up)")
                continue
            print(f"bot> {out.text}")
            for c in out.citations:
                print(f"     [{c.title}]({c.url or c.doc_id})")
            while True:
                try:
                    more = await channel.pop_message(receipt.session_key, timeout_s=0.3)
                except TimeoutError:
                    break
                print(f"bot> {more.text}")
    finally:
        await hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
