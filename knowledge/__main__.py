"""``python -m knowledge [--data-dir DIR] [--ingest PATH]... QA.jsonl``.

Ingests the given files or folders (incrementally), then evaluates retrieval on the annotated
questions. Prints one JSON line with the ingest report (with ``chunks_per_second``) when
``--ingest`` is given, and one with the evaluation report (recall@1/3/5, MRR@10, mean query
latency in milliseconds). The ``switchboard kb eval`` command is the user-facing equivalent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bot.config import load_settings
from knowledge.kb import KnowledgeBase


async def _run(args: argparse.Namespace) -> None:
    settings = load_settings(data_dir=args.data_dir)
    kb = await KnowledgeBase.open(settings)
    try:
        if args.ingest:
            report = await kb.ingest([Path(p) for p in args.ingest])
            line = {**asdict(report), "chunks_per_second": round(report.chunks_per_second, 1)}
            print(json.dumps({"ingest": line}))
        result = await kb.evaluate(Path(args.qa))
        print(json.dumps({"eval": asdict(result)}))
    finally:
        await kb.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m knowledge", description=__doc__)
    parser.add_argument("qa", help="JSONL file of annotated questions")
    parser.add_argument("--data-dir", type=Path, default=None, help="default ./.switchboard")
    parser.add_argument(
        "--ingest", action="append", default=[], help="file or folder to ingest first (repeat)"
    )
    asyncio.run(_run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
