"""``switchboard doctor``: is every configured external system reachable and authorized?

Runs the probes of :func:`bot.compose.integration_checks` (the ticket backend's Zendesk or
Jira today; CRM and MCP servers join the list) concurrently and prints one line per system::

    ok    zendesk  https://acme.zendesk.com: signed in as a Zendesk admin
    FAIL  jira     https://acme.atlassian.net: 401 unauthorized: check jira_email and ...

``--json`` prints ``{"checks": [{"name", "ok", "detail"}...], "ok": bool}`` instead. Exit
code: 0 when every check passed (or none is configured), 1 otherwise. No secret is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from bot.config import Settings
from bot.tools import BackendCheck, CheckFn


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``doctor`` to the top-level subparsers ``sub``."""
    p = sub.add_parser(
        "doctor", help="check that each configured external system is reachable and authorized"
    )
    common(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


async def _safe(check: CheckFn) -> BackendCheck:
    try:
        return await check()
    except Exception as exc:  # a probe must never break the report of the others
        return BackendCheck("unknown", False, f"the check itself failed: {type(exc).__name__}")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run every probe, print the report, return the exit code (0 all ok, 1 otherwise)."""
    from bot.compose import integration_checks

    results = await asyncio.gather(*(_safe(c) for c in integration_checks(settings)))
    ok = all(r.ok for r in results)
    if args.json:
        checks = [{"name": r.name, "ok": r.ok, "detail": r.detail} for r in results]
        print(json.dumps({"checks": checks, "ok": ok}))
    elif not results:
        print("no external system is configured (ticket_backend: local)")
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            print(f"{'ok' if r.ok else 'FAIL':<5} {r.name:<{width}}  {r.detail}")
    return 0 if ok else 1
