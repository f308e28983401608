"""``switchboard worker``: a process that only consumes shared lanes, and the scale-out helpers.

A worker runs the router, the agent, ``hub.deliver`` and the channels' ``send`` for turns it
claims from the Redis lanes; it serves no webhooks, REST or console, only ``GET /healthz``,
``GET /readyz`` and ``GET /metrics`` (see :mod:`bot.server`) on ``--host``/``--port``, which
the deploy manifests probe and scrape.

The knowledge base on one host without a Qdrant server: local (on-disk) Qdrant lets one process
at a time open its folder (a ``portalocker`` file lock). :func:`open_knowledge` opens the folder
when it is free and otherwise a private read-only *snapshot*: a copy of the folder in a temp dir
(SQLite files copied with SQLite's online backup API, so a copy taken while the owner writes is
consistent), removed at close. No worker fails because another holds the lock; a snapshot
shows the index as it was when the worker started (restart workers after ``switchboard
ingest``, or use a Qdrant server: ``SWITCHBOARD_QDRANT_URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from bot.config import Settings
from bot.errors import BackendUnavailable

if TYPE_CHECKING:
    from bot.hub import Hub
    from knowledge import KnowledgeBase

log = logging.getLogger(__name__)


class IndexSnapshot:
    """A temp-dir copy of the local Qdrant folder; :meth:`close` deletes it.

    Attributes:
        data_dir: the temp dir used as ``data_dir`` (the copy is ``data_dir / "qdrant"``).
    """

    def __init__(self, source: Path) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="switchboard-kb-"))
        target = self.data_dir / "qdrant"
        try:
            shutil.copytree(
                source,
                target,
                ignore=shutil.ignore_patterns(".lock"),
                copy_function=_copy_consistent,
            )
        except BaseException:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise

    async def close(self) -> None:
        """Delete the copy."""
        await asyncio.to_thread(shutil.rmtree, self.data_dir, True)


def _copy_consistent(src: str, dst: str) -> str:
    """Copy one file; SQLite databases through the online backup API (a consistent copy)."""
    if src.endswith(".sqlite"):
        with (
            contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as source,
            contextlib.closing(sqlite3.connect(dst)) as target,
        ):
            source.backup(target)
        return dst
    return str(shutil.copy2(src, dst))


def _locked(exc: BaseException) -> bool:
    return "already accessed by another instance" in str(exc)


async def open_knowledge(settings: Settings) -> tuple[KnowledgeBase, IndexSnapshot | None]:
    """Open the knowledge base; a local index locked by another process opens as a snapshot.

    Returns:
        The knowledge base, and the snapshot to close after it (None when the folder itself
        or a Qdrant server was opened).

    Raises:
        bot.errors.BackendUnavailable: when Qdrant fails for another reason.
        bot.errors.ConfigError: see :meth:`knowledge.KnowledgeBase.open`.
    """
    from knowledge import KnowledgeBase

    try:
        return await KnowledgeBase.open(settings), None
    except BackendUnavailable as exc:
        if settings.qdrant_url is not None or not _locked(exc):
            raise
    snapshot = await asyncio.to_thread(IndexSnapshot, settings.qdrant_path)
    try:
        kb = await KnowledgeBase.open(settings.model_copy(update={"data_dir": snapshot.data_dir}))
    except BaseException:
        await snapshot.close()
        raise
    log.info(
        "worker.index_snapshot",
        extra={"source": str(settings.qdrant_path), "copy": str(snapshot.data_dir)},
    )
    return kb, snapshot


def make_worker_app(hub: Hub) -> web.Application:
    """The worker's HTTP application: ``/healthz``, ``/readyz`` and ``/metrics`` only."""
    from bot.server import HUB_KEY, access_log_middleware, healthz, metrics, readyz

    app = web.Application(middlewares=[access_log_middleware])
    app[HUB_KEY] = hub
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
        ]
    )
    return app


async def run_worker(
    hub: Hub,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    on_listening: asyncio.Future[int] | None = None,
) -> None:
    """Start ``hub`` (consuming), serve health and metrics until SIGTERM/SIGINT, then drain.

    A worker's channels only send: whatever ``hub.receives`` was, it is set False before the
    start, so no pull receiver (Telegram polling, IMAP, Discord gateway, Slack Socket Mode) or
    listener runs here; ingress processes run them (see :mod:`bot.leader`).

    Args:
        hub: a built hub with ``consume=True``, not started.
        host: address of the health/metrics listener (port 0 picks a free port).
        port: its TCP port.
        stop: an event that also triggers shutdown (tests).
        on_listening: resolved with the bound port once the listener accepts connections.

    Raises:
        OSError: when the address cannot be bound (the hub is stopped again).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    runner = web.AppRunner(make_worker_app(hub), access_log=None, handle_signals=False)
    hub.receives = False
    await hub.start()
    from bot.server import bound_port, freeze_startup_heap

    freeze_startup_heap()
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = bound_port(runner, port)
        log.info("worker.listening", extra={"host": host, "port": bound})
        if on_listening is not None and not on_listening.done():
            on_listening.set_result(bound)
        await stop.wait()
        log.info("worker.stopping")
    finally:
        await hub.stop()
        await runner.cleanup()
        for sig in installed:
            loop.remove_signal_handler(sig)
        log.info("worker.stopped")
