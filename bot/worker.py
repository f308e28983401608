"""``switchboard worker``: a process that only consumes shared lanes.

A worker runs the router, the agent, ``hub.deliver`` and the channels' ``send`` for turns it
claims from the Redis lanes; it serves no webhooks, REST or console, only ``GET /healthz``,
``GET /readyz`` and ``GET /metrics`` (see :mod:`bot.server`) on ``--host``/``--port``, which
the deploy manifests probe and scrape. Its hub comes from :func:`bot.compose.build_hub`, which
opens the host's knowledge index in place, as every other process does
(:func:`bot.compose.open_knowledge`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.hub import Hub

log = logging.getLogger(__name__)


async def serve_worker(settings: Settings) -> None:
    """Build the worker's hub (consuming, receiving nothing) and run it (:func:`run_worker`).

    Health and metrics listen on ``settings.host``/``settings.port``.

    Raises:
        bot.errors.ConfigError: see :func:`bot.compose.build_hub`.
        OSError: when the address cannot be bound.
    """
    from bot.compose import build_hub

    hub = await build_hub(settings, consume=True, listen_events=False, receive=False)
    await run_worker(hub, settings.host, settings.port)


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
