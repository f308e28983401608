"""``switchboard kb answers ...``: manage curated answers from the command line.

The arguments are declared in :mod:`bot.cli` (which must not import this package at start);
:func:`answers_command` runs them.

- ``add --question Q [--question Q2 ...] (--answer TEXT | --answer-file FILE) [--source S ...]``:
  save one answer; prints its id. A source is a doc id, or a JSON object
  ``{"doc_id", "title"?, "url"?}``.
- ``import FILE.jsonl``: save every answer of a JSONL file (format in :mod:`knowledge.answers`);
  an answer with the id of a stored one replaces it.
- ``list [--json]``: the stored answers.
- ``remove ID``: delete one.

They write ``DATA_DIR/curated_answers.jsonl`` directly (no embedding model, no index), so they
work while the hub runs; the hub picks the change up at its next question.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bot.config import Settings
from knowledge.answers import AnswerStore, parse_answer, read_answers_file
from knowledge.ingest import IngestError


def _source(value: str) -> Any:
    if value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise IngestError(f"invalid JSON: {exc}", source="--source") from exc
    return value


def answers_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``switchboard kb answers ARGS``; returns the exit status.

    Raises:
        knowledge.ingest.IngestError: for an invalid answer or import file (the CLI prints it).
    """
    store = AnswerStore.for_settings(settings)
    command = args.answers_command
    if command == "add":
        if args.answer_file is not None:
            try:
                answer_text = args.answer_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise IngestError(f"cannot read: {exc}", source=str(args.answer_file)) from exc
        else:
            answer_text = args.answer
        record = {
            "questions": args.question,
            "answer": answer_text,
            "sources": [_source(s) for s in args.source],
            "id": args.id,
        }
        answer = parse_answer(record, source="command line", author="cli")
        store.upsert([answer])
        print(answer.id)
        return 0
    if command == "import":
        answers = read_answers_file(args.file, author="cli")
        store.upsert(answers)
        print(f"{len(answers)} answers saved")
        return 0
    if command == "list":
        for a in store.load():
            if args.json:
                print(json.dumps(a.to_json(), ensure_ascii=False))
            else:
                sources = ", ".join(c.doc_id for c in a.sources) or "no sources"
                print(f"{a.id}  {a.questions[0]!r} (+{len(a.questions) - 1})  [{sources}]")
        return 0
    if command == "remove":
        if store.remove(args.id):
            print(f"removed {args.id}")
            return 0
        print(f"switchboard: no curated answer {args.id!r}", file=sys.stderr)
        return 2
    return 2
