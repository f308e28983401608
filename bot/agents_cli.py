"""The ``switchboard agents`` commands: human agent accounts of the console.

- ``agents add NAME [--display-name D] [--role admin|agent|viewer] [--password-stdin]``
- ``agents list [--json]``: one line per account (name, role, active, display name).
- ``agents disable NAME`` / ``agents enable NAME``: login refused / allowed again (open
  console sessions of a disabled account end on their next request).
- ``agents set-role NAME ROLE``
- ``agents reset-password NAME [--password-stdin]``

Passwords are read from the terminal twice (or one line of standard input with
``--password-stdin``) and never appear on the command line. Every change is audited with the
actor ``cli``. Exit codes: 0 done, 2 bad input, 1 other errors (printed on standard error).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from bot.config import Settings
from bot.errors import Conflict, NotFound, PayloadInvalid
from bot.store.base import AgentRole, Store

CLI_ACTOR = "cli"
"""Audit-log actor of account changes made from the command line."""

_ROLES = [r.value for r in AgentRole]


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``agents`` and its subcommands to the top-level subparsers ``sub``."""
    p = sub.add_parser("agents", help="human agent accounts of the console")
    ag_sub = p.add_subparsers(dest="agents_command", required=True)
    pa = ag_sub.add_parser("add", help="create a human agent account")
    common(pa)
    pa.add_argument("name")
    pa.add_argument("--display-name", default=None)
    pa.add_argument("--role", choices=_ROLES, default=AgentRole.AGENT.value)
    pa.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    pl = ag_sub.add_parser("list", help="list the accounts")
    common(pl)
    pl.add_argument("--json", action="store_true", help="one JSON object per line")
    for verb, what in (("disable", "refuse the account's logins"), ("enable", "allow again")):
        pd = ag_sub.add_parser(verb, help=what)
        common(pd)
        pd.add_argument("name")
    ps = ag_sub.add_parser("set-role", help="change an account's role")
    common(ps)
    ps.add_argument("name")
    ps.add_argument("role", choices=_ROLES)
    pr = ag_sub.add_parser("reset-password", help="set a new password")
    common(pr)
    pr.add_argument("name")
    pr.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )


def _read_password(args: argparse.Namespace) -> str | None:
    """The new password (None when the two typed ones differ; the error is printed)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != password:
        print("switchboard: passwords differ", file=sys.stderr)
        return None
    return password


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``agents`` subcommand; returns the exit code.

    Raises:
        bot.errors.SwitchboardError: errors other than bad input, an unknown name or a
            conflict (those print and return 2); the caller prints them.
    """
    from bot.store import open_store

    password = None
    if args.agents_command in ("add", "reset-password"):
        password = _read_password(args)
        if password is None:
            return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(settings)
    try:
        return await _run(args, store, password)
    except (PayloadInvalid, NotFound, Conflict) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()


async def _run(args: argparse.Namespace, store: Store, password: str | None) -> int:
    from bot.auth import add_agent, change_agent

    command = args.agents_command
    if command == "add":
        assert password is not None
        account = await add_agent(
            store,
            args.name,
            password,
            args.display_name,
            role=AgentRole(args.role),
            actor=CLI_ACTOR,
        )
        print(f"agent {account.name!r} created ({account.role.value})")
    elif command == "list":
        for a in await store.list_agents():
            if args.json:
                line = {
                    "name": a.name,
                    "display_name": a.display_name,
                    "role": a.role.value,
                    "active": a.active,
                }
                print(json.dumps(line, ensure_ascii=False))
            else:
                state = "active" if a.active else "disabled"
                print(f"{a.name}\t{a.role.value}\t{state}\t{a.display_name}")
    elif command in ("disable", "enable"):
        await change_agent(store, args.name, actor=CLI_ACTOR, active=command == "enable")
        print(f"agent {args.name!r} {command}d")
    elif command == "set-role":
        await change_agent(store, args.name, actor=CLI_ACTOR, role=AgentRole(args.role))
        print(f"agent {args.name!r} is now {args.role}")
    elif command == "reset-password":
        await change_agent(store, args.name, actor=CLI_ACTOR, password=password)
        print(f"password of {args.name!r} reset")
    return 0
