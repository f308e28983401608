"""Quality figures of the PII redactor and the injection detector (``switchboard privacy bench``).

PII: Presidio's own recognizer test cases, one JSON object a line, as extracted in
``../shared/datasets/safety/presidio_pii_dev.jsonl``::

    {"source_file": "presidio-analyzer/tests/test_ip_recognizer.py", "test": "...",
     "params": {"text": "IP: 192.168.1.1.", "expected_len": 1,
                "expected_positions": [[4, 15]], "entities": [...]?, "leniency": 1?}}

The entity type of a record is given by its test file (``test_ip_recognizer.py`` is
``IP_ADDRESS``). The text is ``params.text`` (``params.iban`` in the IBAN tests); the expected
spans are ``expected_positions`` or ``expected_res``; a record with ``expected_len`` > 0 and no
positions only says how many values it holds. Records that exercise a non-default recognizer
parameter (``leniency``) expect different answers for the same text and are left out.

Injection: llm-guard's labelled prompts, one JSON object a line
(``llm_guard_tests/test_prompt_injection_cases.jsonl``): ``prompt`` and ``expected_valid``
(false = an injection).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import PayloadInvalid
from bot.privacy.injection import InjectionDetector
from bot.privacy.redact import IDENTITY_RECOGNIZERS, PiiSpan, Redactor

TEST_FILE_ENTITY = {
    "test_email_recognizer.py": "EMAIL_ADDRESS",
    "test_phone_recognizer.py": "PHONE_NUMBER",
    "test_credit_card_recognizer.py": "CREDIT_CARD",
    "test_iban_recognizer.py": "IBAN_CODE",
    "test_ip_recognizer.py": "IP_ADDRESS",
    "test_url_recognizer.py": "URL",
    "test_crypto_recognizer.py": "CRYPTO",
    "test_mac_recognizer.py": "MAC_ADDRESS",
    "test_us_ssn_recognizer.py": "US_SSN",
    "test_us_bank_recognizer.py": "US_BANK_NUMBER",
    "test_uk_nino_recognizer.py": "UK_NINO",
    "test_uk_postcode_recognizer.py": "UK_POSTCODE",
    "test_date_recognizer.py": "DATE_TIME",
}
"""Presidio test file name to the entity type its cases are about (with :func:`entity_of`)."""


def entity_of(test_file: str) -> str | None:
    """The entity type a Presidio test file is about, e.g. ``test_es_nif_recognizer.py``.

    Listed in :data:`TEST_FILE_ENTITY`, else the type of the identity-number recognizer whose
    module the test is named after (``es_nif_recognizer.py``); None when neither.
    """
    return TEST_FILE_ENTITY.get(test_file) or _identity_test_files().get(test_file)


@functools.cache
def _identity_test_files() -> dict[str, str]:
    """``test_<recognizer module>.py`` → entity type, for :data:`IDENTITY_RECOGNIZERS`."""
    from presidio_analyzer import predefined_recognizers

    out: dict[str, str] = {}
    for entity, class_name in IDENTITY_RECOGNIZERS.items():
        module = getattr(predefined_recognizers, class_name).__module__.rsplit(".", 1)[-1]
        out[f"test_{module}.py"] = entity
    return out


_CONFIG_PARAMS = frozenset({"leniency"})


@dataclass
class TypeScore:
    """Counts for one entity type. Strict: same offsets; lenient: any overlap.

    Attributes:
        records: records of this type scored.
        gold: expected values.
        predicted: values the redactor reported with this type.
        strict_tp: predictions with exactly the expected offsets.
        lenient_tp: predictions overlapping an expected value (each value counted once).
    """

    records: int = 0
    gold: int = 0
    predicted: int = 0
    strict_tp: int = 0
    lenient_tp: int = 0

    @property
    def precision(self) -> float:
        """Strict precision, 0 to 1 (1.0 when nothing was predicted)."""
        return self.strict_tp / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        """Strict recall, 0 to 1 (1.0 when nothing was expected)."""
        return self.strict_tp / self.gold if self.gold else 1.0

    @property
    def lenient_precision(self) -> float:
        """Overlap precision, 0 to 1."""
        return self.lenient_tp / self.predicted if self.predicted else 1.0

    @property
    def lenient_recall(self) -> float:
        """Overlap recall, 0 to 1."""
        return self.lenient_tp / self.gold if self.gold else 1.0

    def add(self, other: TypeScore) -> None:
        """Add ``other``'s counts to these."""
        self.records += other.records
        self.gold += other.gold
        self.predicted += other.predicted
        self.strict_tp += other.strict_tp
        self.lenient_tp += other.lenient_tp


@dataclass
class PiiReport:
    """Result of :func:`bench_pii`.

    Attributes:
        by_type: scores per entity type, in the order first seen.
        skipped: records left out, by reason.
        other_type_detections: detections of another type than the record's (not scored:
            the records hold no expected spans for other types).
        analyze_seconds: wall time spent in :meth:`Redactor.analyze`, summed (seconds).
    """

    by_type: dict[str, TypeScore] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    other_type_detections: int = 0
    analyze_seconds: float = 0.0

    @property
    def total(self) -> TypeScore:
        """Micro-averaged counts over every type."""
        out = TypeScore()
        for score in self.by_type.values():
            out.add(score)
        return out


def _score_record(
    gold: list[tuple[int, int]], unplaced: int, predicted: list[PiiSpan]
) -> TypeScore:
    score = TypeScore(records=1, gold=len(gold) + unplaced, predicted=len(predicted))
    exact = {(p.start, p.end) for p in predicted}
    score.strict_tp = sum(1 for g in gold if g in exact)
    matched: set[int] = set()
    for start, end in gold:
        for i, p in enumerate(predicted):
            if i not in matched and p.start < end and start < p.end:
                matched.add(i)
                break
    score.lenient_tp = len(matched)
    # Values expected without positions: any remaining prediction may be one of them.
    free = min(unplaced, len(predicted) - len(matched))
    score.strict_tp += free
    score.lenient_tp += free
    return score


def read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    """The JSON objects of a JSON Lines file, skipping blank lines.

    Raises:
        PayloadInvalid: on a line that is not a JSON object (``field`` is ``line N``).
        OSError: when the file cannot be read.
    """
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PayloadInvalid(f"not JSON: {exc.msg}", field=f"line {number}") from exc
            if not isinstance(obj, dict):
                raise PayloadInvalid("not a JSON object", field=f"line {number}")
            yield obj


def bench_pii(
    records: Iterable[dict[str, Any]], redactor: Redactor, entities: Iterable[str] | None = None
) -> PiiReport:
    """Score the redactor's detections on Presidio's recognizer test cases.

    Args:
        records: parsed records of the format in the module docstring.
        redactor: the redactor under test (its threshold and regions apply).
        entities: entity types detected in each text, all at once as in production; None
            uses every type the redactor supports.

    Returns:
        Counts per entity type.
    """
    report = PiiReport()
    wanted = sorted(redactor.supported) if entities is None else list(entities)
    for record in records:
        params = record.get("params", {})
        entity = entity_of(Path(str(record.get("source_file", ""))).name)
        text = params.get("text", params.get("iban"))
        reason = None
        if entity is None:
            reason = "test file of an entity type not benchmarked"
        elif not isinstance(text, str):
            reason = "no text"
        elif _CONFIG_PARAMS & params.keys():
            reason = "non-default recognizer parameter (leniency)"
        elif entity not in wanted or entity not in redactor.supported:
            reason = f"{entity} not detected by this configuration"
        if reason is not None or entity is None or not isinstance(text, str):
            key = reason or "?"
            report.skipped[key] = report.skipped.get(key, 0) + 1
            continue
        positions = params.get("expected_positions", params.get("expected_res")) or []
        gold = [(int(s), int(e)) for s, e in positions]
        unplaced = max(0, int(params.get("expected_len", len(gold))) - len(gold))
        started = time.perf_counter()
        found = redactor.analyze(text, wanted)
        report.analyze_seconds += time.perf_counter() - started
        mine = [s for s in found if s.type == entity]
        report.other_type_detections += len(found) - len(mine)
        report.by_type.setdefault(entity, TypeScore()).add(_score_record(gold, unplaced, mine))
    return report


@dataclass
class InjectionReport:
    """Result of :func:`bench_injection`.

    Attributes:
        threshold: the score at or above which a prompt was flagged.
        tp: injections flagged. fp: benign prompts flagged.
        fn: injections missed. tn: benign prompts passed.
        misses: the first characters of each misclassified prompt, with its score.
    """

    threshold: float
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    misses: list[tuple[bool, float, str]] = field(default_factory=list)

    @property
    def precision(self) -> float:
        """Flagged prompts that are injections, 0 to 1."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """Injections flagged, 0 to 1."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def bench_injection(
    records: Iterable[dict[str, Any]], detector: InjectionDetector, threshold: float
) -> InjectionReport:
    """Precision and recall of the injection detector on labelled prompts.

    Args:
        records: objects with ``prompt`` (str) and ``expected_valid`` (bool, false = attack).
        detector: the detector under test.
        threshold: score (0 to 1) at or above which a prompt counts as flagged.

    Returns:
        The confusion counts.
    """
    report = InjectionReport(threshold=threshold)
    for record in records:
        prompt = str(record["prompt"])
        attack = not bool(record["expected_valid"])
        score = detector.score(prompt)
        flagged = score >= threshold
        if attack and flagged:
            report.tp += 1
        elif attack:
            report.fn += 1
            report.misses.append((attack, score, prompt[:70]))
        elif flagged:
            report.fp += 1
            report.misses.append((attack, score, prompt[:70]))
        else:
            report.tn += 1
    return report


BENIGN_TEXT_FIELDS = ("text", "question", "answer", "prompt")
"""Fields read, in this order, from each record of a corpus of benign text."""


@dataclass
class FalseAlarmReport:
    """Result of :func:`bench_false_alarms`.

    Attributes:
        texts: benign texts scored.
        flagged: texts scored at or above the threshold.
        signals: how often each signal fired on a flagged text.
    """

    texts: int = 0
    flagged: int = 0
    signals: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Flagged texts over texts, 0 to 1."""
        return self.flagged / self.texts if self.texts else 0.0


def bench_false_alarms(
    records: Iterable[dict[str, Any]], detector: InjectionDetector, threshold: float
) -> FalseAlarmReport:
    """How often the detector flags text known to be benign (support questions, manuals).

    Args:
        records: objects holding the text in one of :data:`BENIGN_TEXT_FIELDS`.
        detector: the detector under test.
        threshold: score at or above which a text counts as flagged.

    Returns:
        The counts; records without a text field are ignored.
    """
    report = FalseAlarmReport()
    for record in records:
        text = next(
            (record[f] for f in BENIGN_TEXT_FIELDS if isinstance(record.get(f), str)), None
        )
        if text is None:
            continue
        report.texts += 1
        verdict = detector.verdict(text)
        if verdict.score >= threshold:
            report.flagged += 1
            for name in verdict.signals:
                report.signals[name] = report.signals.get(name, 0) + 1
    return report
