"""The ``switchboard redact`` and ``switchboard privacy bench`` commands.

``switchboard redact [--entities E1,E2] [--channel C] FILE`` reads JSON Lines records
``{"text": ...}`` (FILE ``-`` is standard input) and prints one line per record::

    {"text": "Mail <EMAIL_1>", "entities": [{"type": "EMAIL_ADDRESS", "start": 5, "end": 21}]}

Offsets are in characters (Unicode code points) of the input text. A record that is not a JSON
object with a string ``text`` prints ``{"error": "..."}`` in its place and the command exits 1.
Everything runs offline: no model or list is fetched.

``switchboard privacy bench pii FILE`` prints recall and precision per entity type on
Presidio's recognizer cases; ``switchboard privacy bench injection FILE`` prints precision and
recall of the injection detector on labelled prompts (formats: :mod:`bot.privacy.bench`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from bot.config import Settings, load_settings

COMMANDS = frozenset({"redact", "privacy"})
"""Top-level command names this module handles."""


def _entity_list(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [part for value in values for part in value.split(",") if part.strip()]


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``redact`` and ``privacy`` to the ``switchboard`` parser.

    Args:
        sub: the top-level sub-command action.
        common: adds the ``--data-dir`` and ``--config`` options every command takes.

    Returns:
        The subcommands of ``privacy`` (``export`` and ``erase`` are added by
        :mod:`bot.data_cli`).
    """
    p = sub.add_parser("redact", help='replace PII in JSONL records {"text": ...} by tokens')
    common(p)
    p.add_argument("file", type=Path, help="a JSON Lines file, - for standard input")
    p.add_argument(
        "--entities",
        action="append",
        default=None,
        help="comma-separated entity types, e.g. EMAIL_ADDRESS,PHONE_NUMBER; repeatable "
        "(default: setting pii_entities)",
    )
    p.add_argument("--channel", default=None, help="use this channel's pii_channel_entities")

    p = sub.add_parser("privacy", help="PII redaction and prompt-injection benchmarks")
    privacy_sub = p.add_subparsers(dest="privacy_command", required=True)
    pb = privacy_sub.add_parser("bench", help="precision and recall on a labelled data set")
    common(pb)
    pb.add_argument("what", choices=("pii", "injection"))
    pb.add_argument("file", type=Path, help="JSON Lines cases (see bot.privacy.bench)")
    pb.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="score threshold (default: pii_score_threshold or injection_threshold)",
    )
    pb.add_argument(
        "--entities", action="append", default=None, help="pii: comma-separated entity types"
    )
    pb.add_argument("--json", action="store_true", help="print one JSON object")
    pb.add_argument(
        "--show-misses", action="store_true", help="injection: print misclassified prompts"
    )
    pb.add_argument(
        "--benign",
        type=Path,
        action="append",
        default=[],
        help="injection: also count false alarms on a JSONL corpus of benign text "
        "(field text, question, answer or prompt); repeatable",
    )
    return privacy_sub


def run(args: argparse.Namespace) -> int:
    """Run a command of :data:`COMMANDS`; returns the exit code.

    Raises:
        SwitchboardError: on invalid settings or entity names (the caller reports it).
    """
    settings = load_settings(args.config, data_dir=args.data_dir)
    if args.command == "redact":
        return _redact(args, settings)
    if args.what == "pii":
        return _bench_pii(args, settings)
    return _bench_injection(args, settings)


def _lines(path: Path) -> Iterator[str]:
    if str(path) == "-":
        yield from sys.stdin
        return
    with path.open(encoding="utf-8") as fh:
        yield from fh


def _redact(args: argparse.Namespace, settings: Settings) -> int:
    from bot.privacy.redact import Redactor, check_entity_types

    entities = _entity_list(args.entities)
    if entities is None:
        entities = (
            settings.pii_entities_for(args.channel) if args.channel else settings.pii_entities
        )
    redactor = Redactor(
        check_entity_types(entities),
        score_threshold=settings.pii_score_threshold,
        phone_regions=settings.pii_phone_regions,
        spacy_model=settings.pii_spacy_model,
    )
    if redactor.cue_only:
        print(
            f"switchboard: {', '.join(redactor.cue_only)} found only from context cues "
            "(self-introductions, sign-offs, street addresses): no NER model "
            "(set pii_spacy_model to an installed spaCy pipeline)",
            file=sys.stderr,
        )
    if str(args.file) != "-" and not args.file.is_file():
        print(f"switchboard: no such file: {args.file}", file=sys.stderr)
        return 2
    return redact_stream(_lines(args.file), redactor, sys.stdout)


def redact_stream(lines: Iterable[str], redactor: Any, out: IO[str]) -> int:
    """Redact each JSON Lines record and write one JSON line per record to ``out``.

    Args:
        lines: input lines; blank ones are skipped.
        redactor: a :class:`~bot.privacy.redact.Redactor`.
        out: where the lines go.

    Returns:
        0, or 1 when some record was not a JSON object with a string ``text``.
    """
    code = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record: Any = None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            error = f"line {number}: not JSON ({exc.msg})"
        else:
            error = ""
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                error = f'line {number}: not an object with a string "text"'
        if error:
            out.write(json.dumps({"error": error}) + "\n")
            code = 1
            continue
        text, _vault, spans = redactor.redact_spans(record["text"])
        found = [{"type": s.type, "start": s.start, "end": s.end} for s in spans]
        out.write(json.dumps({"text": text, "entities": found}, ensure_ascii=False) + "\n")
    return code


def _bench_pii(args: argparse.Namespace, settings: Settings) -> int:
    from bot.privacy.bench import bench_pii, read_jsonl
    from bot.privacy.redact import Redactor, check_entity_types

    threshold = settings.pii_score_threshold if args.threshold is None else args.threshold
    redactor = Redactor(
        score_threshold=threshold,
        phone_regions=settings.pii_phone_regions,
        spacy_model=settings.pii_spacy_model,
    )
    entities = _entity_list(args.entities)
    report = bench_pii(
        read_jsonl(args.file),
        redactor,
        None if entities is None else check_entity_types(entities),
    )
    scored = max(1, report.total.records)
    rows: dict[str, dict[str, float | int]] = {}
    for name, score in [*report.by_type.items(), ("ALL (micro)", report.total)]:
        rows[name] = {
            "records": score.records,
            "expected": score.gold,
            "predicted": score.predicted,
            "precision": round(score.precision, 3),
            "recall": round(score.recall, 3),
            "overlap_precision": round(score.lenient_precision, 3),
            "overlap_recall": round(score.lenient_recall, 3),
        }
    if args.json:
        figures = {
            "threshold": threshold,
            "phone_regions": list(redactor.phone_regions),
            "by_type": rows,
            "skipped": report.skipped,
            "other_type_detections": report.other_type_detections,
            "mean_ms_per_text": round(1000 * report.analyze_seconds / scored, 3),
        }
        print(json.dumps(figures))
        return 0
    print(
        f"PII detection on {args.file.name} (score >= {threshold}, exact offsets; "
        "ovl = any overlap with an expected value)"
    )
    header = ("type", "records", "expected", "found", "precision", "recall", "ovl P", "ovl R")
    print("{:<16}{:>8}{:>9}{:>7}{:>10}{:>8}{:>7}{:>7}".format(*header))
    for name, row in rows.items():
        print("{:<16}{:>8}{:>9}{:>7}{:>10.3f}{:>8.3f}{:>7.3f}{:>7.3f}".format(name, *row.values()))
    print(
        f"detections of another type than the record's (not scored): "
        f"{report.other_type_detections}"
    )
    print(f"mean analysis time: {1000 * report.analyze_seconds / scored:.2f} ms per text")
    for reason, count in report.skipped.items():
        print(f"skipped {count}: {reason}")
    return 0


def _bench_injection(args: argparse.Namespace, settings: Settings) -> int:
    from bot.privacy.bench import bench_false_alarms, bench_injection, read_jsonl
    from bot.privacy.injection import InjectionDetector

    threshold = settings.injection_threshold if args.threshold is None else args.threshold
    report = bench_injection(read_jsonl(args.file), InjectionDetector(), threshold)
    figures = {
        "threshold": threshold,
        "injections": report.tp + report.fn,
        "benign": report.tn + report.fp,
        "precision": round(report.precision, 3),
        "recall": round(report.recall, 3),
        "true_positives": report.tp,
        "false_positives": report.fp,
        "false_negatives": report.fn,
        "true_negatives": report.tn,
    }
    for path in args.benign:
        alarms = bench_false_alarms(read_jsonl(path), InjectionDetector(), threshold)
        figures[f"false_alarms:{path.name}"] = (
            f"{alarms.flagged}/{alarms.texts} ({alarms.rate:.1%})"
            + (f" {alarms.signals}" if alarms.signals else "")
        )
    if args.json:
        print(json.dumps(figures))
    else:
        from rich.console import Console
        from rich.table import Table

        print(f"prompt-injection detection on {args.file.name}")
        table = Table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in figures.items():
            table.add_row(key.replace("_", " "), str(value))
        Console(width=100).print(table)
    if args.show_misses:
        for attack, score, head in report.misses:
            kind = "missed injection" if attack else "false alarm"
            print(f"{kind} (score {score:.2f}): {head!r}", file=sys.stderr)
    return 0
