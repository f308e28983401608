"""Data-protection commands: the audit chain and data-subject requests.

- ``audit verify [--expect-head SEQ:HASH] [--json]``: checks every link and seal of the audit
  log (:mod:`bot.store.audit`). Exit 0 when intact (it prints the head: keep it somewhere the
  database's writers cannot reach, and pass it next time as ``--expect-head``), 1 when not,
  naming the first bad entry by ``seq``.
- ``audit export [--out FILE]``: the chained log as JSON Lines, oldest first.
- ``privacy export (--channel C --user ID | --email E) [--out FILE]``: everything stored about
  one customer, as one JSON document (:meth:`bot.subjects.SubjectRequests.export`: the
  database's rows, messages waiting in Redis lanes, knowledge-base material).
- ``privacy erase (--channel C --user ID | --email E) --yes``: deletes or anonymizes it
  everywhere (:meth:`bot.subjects.SubjectRequests.erase`) and prints the report, whose request
  id is in the audit log.
- ``customer export ID`` and ``customer erase ID --yes``: the same, the customer named by one
  argument: an e-mail address, or ``CHANNEL:USER_ID`` (``telegram:12345``).

Export and erase are audited with the actor ``cli``. This process reaches Redis lanes through
``redis_url`` and the knowledge base in ``data_dir`` (registered by
:func:`bot.compose.subject_holders`), but not the memory lanes of a running hub; on the
embedded SQLite database, or with memory lanes, run them while the hub is stopped, or use the
admin API (``/api/v1/admin/privacy``) of the running hub. Exit codes: 0 done, 1 a tampered log,
2 bad input or a part that cannot be reached (nothing after that part was erased).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bot.config import Settings
from bot.errors import PayloadInvalid
from bot.privacy.audit_chain import ChainHead
from bot.store.engine import json_dumps

CLI_ACTOR = "cli"
"""Audit-log actor of requests made from the command line."""

PRIVACY_COMMANDS = frozenset({"export", "erase"})
"""``privacy`` subcommands this module runs (the others are :mod:`bot.privacy.cli`'s)."""


def _subject_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel", default=None, help="channel plugin name (with --user)")
    p.add_argument("--user", default=None, help="the customer's platform user id")
    p.add_argument("--email", default=None, help="the customer's e-mail address")


def add_parsers(
    sub: Any, privacy_sub: Any, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add ``audit verify|export`` and ``privacy export|erase``.

    Args:
        sub: the top-level subparsers action.
        privacy_sub: the subparsers action of ``privacy`` (from :mod:`bot.privacy.cli`).
        common: adds ``--data-dir`` and ``--config``.
    """
    p = sub.add_parser("audit", help="the tamper-evident audit log")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    pv = audit_sub.add_parser("verify", help="check every entry's hash, seal and link")
    common(pv)
    pv.add_argument(
        "--expect-head", default=None, help="SEQ:HASH printed by an earlier verify (truncation)"
    )
    pv.add_argument("--json", action="store_true", help="print one JSON object")
    pe = audit_sub.add_parser("export", help="the log as JSON Lines, oldest first")
    common(pe)
    pe.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")

    px = privacy_sub.add_parser("export", help="everything stored about one customer (JSON)")
    common(px)
    _subject_options(px)
    px.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    pz = privacy_sub.add_parser("erase", help="delete or anonymize one customer everywhere")
    common(pz)
    _subject_options(pz)
    pz.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")

    p = sub.add_parser("customer", help="data-subject requests: export or erase one customer")
    customer_sub = p.add_subparsers(dest="privacy_command", required=True)
    for name, text in (
        ("export", "everything stored about one customer (JSON)"),
        ("erase", "delete or anonymize one customer everywhere"),
    ):
        pc = customer_sub.add_parser(name, help=text)
        common(pc)
        pc.add_argument("id", help="an e-mail address, or CHANNEL:USER_ID (telegram:12345)")
        if name == "export":
            pc.add_argument("--out", type=Path, default=None, help="file (default: stdout)")
        else:
            pc.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")


def _head(text: str) -> ChainHead:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise PayloadInvalid("--expect-head is SEQ:HASH (64 hex digits)", field="expect_head")
    return ChainHead(int(seq), digest.lower())


def _subject(args: argparse.Namespace) -> Any:
    from bot.store.subjects import Subject

    ident = getattr(args, "id", None)
    if ident:
        return Subject.parse(ident)
    if args.user and not args.channel:
        raise PayloadInvalid("--user needs --channel", field="channel")
    return Subject(channel=args.channel, user_id=args.user, email=args.email)


def _out(path: Path | None) -> IO[str]:
    """Standard output, or ``path`` created readable by its owner only (it holds personal data)."""
    if path is None:
        return sys.stdout
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run an ``audit`` or ``privacy export|erase`` command; returns the exit code.

    Raises:
        bot.errors.SwitchboardError: bad input or an unreachable database (the caller prints
            it and exits 2).
    """
    from bot.store import open_store

    if args.command == "audit" and args.audit_command == "verify":
        expected = _head(args.expect_head) if args.expect_head else None
    elif args.command in ("privacy", "customer"):
        subject = _subject(args)
        if args.privacy_command == "erase" and not args.yes:
            print("switchboard: erasure cannot be undone: add --yes", file=sys.stderr)
            return 2
    store = await open_store(settings)
    try:
        if args.command == "audit" and args.audit_command == "verify":
            return await _verify(store, expected, as_json=args.json)
        if args.command == "audit":
            return await _export_log(store, args.out)
        return await _subject_request(args, settings, store, subject)
    finally:
        await store.close()


async def _subject_request(
    args: argparse.Namespace, settings: Settings, store: Any, subject: Any
) -> int:
    """Run ``export`` or ``erase`` with the parts this process reaches (module docstring)."""
    from bot.compose import subject_holders
    from bot.store.sql import SqlStore
    from bot.subjects import SubjectRequests

    if not isinstance(store, SqlStore):
        raise PayloadInvalid("data-subject requests need the SQL store", field="database_url")
    purger = None
    if settings.lane_backend == "redis" and settings.redis_url:
        from bot.lanes.redis.purge import LanePurger

        purger = LanePurger.connect(settings.redis_url)
    try:
        requests = SubjectRequests(
            store,
            settings=settings,
            lanes=purger,
            holders=subject_holders(settings),
            counters=purger.client if purger is not None else None,
        )
        if args.privacy_command == "erase":
            report = await requests.erase(subject, actor=CLI_ACTOR)
            print(json_dumps(report.as_json()))
            return 0
        doc = await requests.export(subject, actor=CLI_ACTOR)
    finally:
        if purger is not None:
            await purger.close()
    out = _out(args.out)
    try:
        out.write(json_dumps(doc) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    rows = sum(map(len, doc["tables"].values()))
    queued = len(doc["queued_lane_state"]["messages"])
    print(
        f"exported {len(doc['sessions'])} sessions, {rows} rows, {queued} queued messages",
        file=sys.stderr,
    )
    return 0


async def _verify(store: Any, expected: ChainHead | None, *, as_json: bool) -> int:
    check = await store.verify_audit(expected_head=expected)
    head = check.chain.head
    first = check.first_problem
    if as_json:
        print(
            json.dumps(
                {
                    "ok": check.ok,
                    "entries": check.chain.entries,
                    "head": f"{head.seq}:{head.hash}",
                    "erased": check.erased,
                    "unchained": check.unchained,
                    "problems": [
                        {"seq": p.seq, "fault": p.fault.value, "detail": p.detail}
                        for p in check.chain.problems
                    ],
                }
            )
        )
        return 0 if check.ok else 1
    if first is None:
        print(
            f"audit log intact: {check.chain.entries} entries "
            f"({check.erased} erased, {check.unchained} not yet chained); "
            f"head {head.seq}:{head.hash}"
        )
        return 0
    print(
        f"audit log TAMPERED: first bad entry is seq {first.seq} ({first.fault.value}): "
        f"{first.detail}"
    )
    for problem in check.chain.problems[1:]:
        print(f"  also seq {problem.seq} ({problem.fault.value}): {problem.detail}")
    return 1


async def _export_log(store: Any, path: Path | None) -> int:
    from bot.store.audit import export_line

    out = _out(path)
    after = 0
    try:
        while rows := await store.audit_chain_rows(after_seq=after, limit=1000):
            for row in rows:
                out.write(json_dumps(export_line(row)) + "\n")
            after = rows[-1].seq
    finally:
        if out is not sys.stdout:
            out.close()
    return 0
