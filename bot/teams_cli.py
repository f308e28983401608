"""The ``switchboard teams`` and ``switchboard sla`` commands: assignment settings.

- ``teams add NAME [--display-name D] [--channel C]... [--topic T]... [--member AGENT]...``
- ``teams set NAME [--display-name D] [--channel C]... [--topic T]... [--member AGENT]...``:
  replaces the lists given (``--no-members`` empties the member list).
- ``teams list [--json]``, ``teams remove NAME``.
- ``teams capacity AGENT N|default``: the agent's capacity (open conversations at once).
- ``sla add NAME --first-response S --resolution S [--team T] [--priority P]
  [--escalate-to P] [--business-hours FILE.json]``: create or replace a policy (seconds).
- ``sla list [--json]``, ``sla remove NAME``.

Changes are audited with the actor ``cli``. Exit codes: 0 done, 2 bad input (unknown name,
bad value, name taken), 1 other errors (printed on standard error).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import Conflict, NotFound, PayloadInvalid
from bot.store.base import Store
from bot.store.routing_records import Priority, Team

CLI_ACTOR = "cli"
"""Audit-log actor of changes made from the command line."""

_PRIORITIES = [p.value for p in Priority]


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``teams`` and ``sla`` with their subcommands to the top-level subparsers ``sub``."""
    p = sub.add_parser("teams", help="teams (inboxes) and agents' capacity")
    t_sub = p.add_subparsers(dest="teams_command", required=True)
    for verb, what in (("add", "create a team"), ("set", "change a team")):
        pa = t_sub.add_parser(verb, help=what)
        common(pa)
        pa.add_argument("name")
        pa.add_argument("--display-name", default=None)
        pa.add_argument("--channel", action="append", default=None, help="repeatable")
        pa.add_argument("--topic", action="append", default=None, help="repeatable")
        pa.add_argument("--member", action="append", default=None, help="repeatable")
        if verb == "set":
            pa.add_argument("--no-members", action="store_true")
    pl = t_sub.add_parser("list", help="list the teams")
    common(pl)
    pl.add_argument("--json", action="store_true", help="one JSON object per line")
    pr = t_sub.add_parser("remove", help="delete a team")
    common(pr)
    pr.add_argument("name")
    pc = t_sub.add_parser("capacity", help="an agent's capacity (N or 'default')")
    common(pc)
    pc.add_argument("agent")
    pc.add_argument("capacity")

    p = sub.add_parser("sla", help="SLA policies")
    s_sub = p.add_subparsers(dest="sla_command", required=True)
    ps = s_sub.add_parser("add", help="create or replace a policy")
    common(ps)
    ps.add_argument("name")
    ps.add_argument("--first-response", type=int, required=True, help="seconds")
    ps.add_argument("--resolution", type=int, required=True, help="seconds")
    ps.add_argument("--team", default=None)
    ps.add_argument("--priority", choices=_PRIORITIES, default=None)
    ps.add_argument("--escalate-to", choices=_PRIORITIES, default=None)
    ps.add_argument("--business-hours", type=Path, default=None, help="a JSON file")
    psl = s_sub.add_parser("list", help="list the policies")
    common(psl)
    psl.add_argument("--json", action="store_true")
    psr = s_sub.add_parser("remove", help="delete a policy")
    common(psr)
    psr.add_argument("name")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``teams`` or ``sla`` subcommand; returns the exit code."""
    from bot.store import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(settings)
    try:
        if args.command == "teams":
            return await _teams(args, store)
        return await _sla(args, store)
    except (PayloadInvalid, NotFound, Conflict) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()


async def _teams(args: argparse.Namespace, store: Store) -> int:
    from bot.assignment import checked_team

    command = args.teams_command
    teams = {t.name: t for t in await store.teams()}
    if command in ("add", "set"):
        old = teams.get(args.name)
        if command == "add" and old is not None:
            raise Conflict(f"team {args.name!r} exists")
        if command == "set" and old is None:
            raise NotFound(f"no team {args.name!r}")
        members = args.member if args.member is not None else (old.members if old else ())
        if command == "set" and args.no_members:
            members = ()
        team = Team(
            name=args.name,
            display_name=args.display_name or (old.display_name if old else args.name),
            channels=tuple(args.channel or (old.channels if old else ())),
            topics=tuple(args.topic or (old.topics if old else ())),
            members=tuple(members),
        )
        team = checked_team(team, {a.name for a in await store.list_agents()})
        await store.save_team(team)
        await store.audit(
            CLI_ACTOR, f"team_{'create' if old is None else 'update'}", None, {"team": team.name}
        )
        print(f"team {team.name!r} saved ({len(team.members)} members)")
    elif command == "list":
        for t in teams.values():
            if args.json:
                line = {
                    "name": t.name,
                    "display_name": t.display_name,
                    "channels": list(t.channels),
                    "topics": list(t.topics),
                    "members": list(t.members),
                }
                print(json.dumps(line, ensure_ascii=False))
            else:
                print(
                    f"{t.name}\t{t.display_name}\tchannels={','.join(t.channels) or '-'}"
                    f"\ttopics={','.join(t.topics) or '-'}\tmembers={','.join(t.members) or '-'}"
                )
    elif command == "remove":
        await store.delete_team(args.name)
        await store.audit(CLI_ACTOR, "team_delete", None, {"team": args.name})
        print(f"team {args.name!r} removed")
    elif command == "capacity":
        if await store.agent(args.agent) is None:
            raise NotFound(f"no agent {args.agent!r}")
        capacity: int | None = None
        if args.capacity != "default":
            try:
                capacity = int(args.capacity)
            except ValueError as exc:
                raise PayloadInvalid("capacity must be a number or 'default'") from exc
            if not 0 <= capacity <= 100:
                raise PayloadInvalid("capacity must be from 0 to 100")
        await store.set_agent_status(
            args.agent, capacity=capacity, clear_capacity=capacity is None
        )
        await store.audit(CLI_ACTOR, "capacity", None, {"agent": args.agent, "capacity": capacity})
        print(f"capacity of {args.agent!r}: {args.capacity}")
    return 0


async def _sla(args: argparse.Namespace, store: Store) -> int:
    from bot.sla import parse_policy, policy_json

    command = args.sla_command
    if command == "add":
        hours = None
        if args.business_hours is not None:
            try:
                hours = json.loads(args.business_hours.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise PayloadInvalid(f"cannot read {args.business_hours}: {exc}") from exc
        policy = parse_policy(
            {
                "name": args.name,
                "first_response_s": args.first_response,
                "resolution_s": args.resolution,
                "team": args.team,
                "priority": args.priority,
                "escalate_to": args.escalate_to,
                "business_hours": hours,
            }
        )
        if policy.team is not None and policy.team not in {t.name for t in await store.teams()}:
            raise NotFound(f"no team {policy.team!r}")
        await store.save_sla_policy(policy)
        await store.audit(CLI_ACTOR, "sla_policy_save", None, {"policy": policy.name})
        print(f"SLA policy {policy.name!r} saved")
    elif command == "list":
        for p in await store.sla_policies():
            if args.json:
                print(json.dumps(policy_json(p), ensure_ascii=False))
            else:
                print(
                    f"{p.name}\tteam={p.team or '*'}\tpriority={p.priority or '*'}"
                    f"\tfirst_response={p.first_response_s}s\tresolution={p.resolution_s}s"
                    f"\tbusiness_hours={'yes' if p.business_hours else 'no'}"
                )
    elif command == "remove":
        await store.delete_sla_policy(args.name)
        await store.audit(CLI_ACTOR, "sla_policy_delete", None, {"policy": args.name})
        print(f"SLA policy {args.name!r} removed")
    return 0
