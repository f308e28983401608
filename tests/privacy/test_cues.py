"""Names and street addresses found from their context, without a named-entity model."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

import pytest

from bot.privacy.redact import Redactor

DATASETS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"


@pytest.fixture(scope="module")
def cues() -> Redactor:
    """A redactor of names and places only, with no NER model (the default install)."""
    return Redactor(["PERSON", "LOCATION"])


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Hi, my name is Ana Lopez and my order is late.", ["Ana Lopez"]),
        ("Hello, this is Jean-Luc O'Neil from Acme, can you help?", ["Jean-Luc O'Neil"]),
        ("I'm Maria Gonzalez. My parcel never came.", ["Maria Gonzalez"]),
        ("It's Ana here, I called yesterday", ["Ana"]),
        ("Name: Ana Lopez\nEmail: none", ["Ana Lopez"]),
        ("The account is registered under Tom Baker", ["Tom Baker"]),
        ("Still broken.\n\nThanks,\nAna", ["Ana"]),
        ("It does not charge.\n\nKind regards,\r\nJohn P. Smith\r\n", ["John P. Smith"]),
        ("Any update? Thanks, Peter", ["Peter"]),
        ("Please ship it to 221B Baker Street, London.", ["221B Baker Street"]),
        (
            "My address is 1600 Pennsylvania Ave NW, Suite 400, DC",
            ["1600 Pennsylvania Ave NW, Suite 400, DC"],
        ),
        ("I live at 42 5th Avenue Apt 3B", ["42 5th Avenue Apt 3B"]),
        ("Lieferadresse: Hauptstraße 5, 10115 Berlin", ["Hauptstraße 5"]),
        ("Send it to PO Box 1234 please", ["PO Box 1234"]),
        ("I live in Valencia and my order is late", ["Valencia"]),
        ("We're based in New South Wales.", ["New South Wales"]),
        ("I am based in Frankfurt am Main, Germany", ["Frankfurt am Main"]),
        (
            "My shipping address is Flat 3, 12 rue de la Paix, 75002 Paris. Please hurry!",
            ["Flat 3, 12 rue de la Paix, 75002 Paris"],
        ),
        (
            "my address is 4-2-8 Shibakoen, Minato-ku, Tokyo 105-0011",
            ["4-2-8 Shibakoen, Minato-ku, Tokyo 105-0011"],
        ),
        ("Address: Calle Mayor 5, 28013 Madrid\nPhone: none", ["Calle Mayor 5, 28013 Madrid"]),
    ],
)
def test_names_and_addresses_in_their_usual_wording_are_found(
    cues: Redactor, text: str, found: list[str]
) -> None:
    assert [text[s.start : s.end] for s in cues.analyze(text)] == found
    redacted, vault = cues.redact(text)
    assert all(value not in redacted for value in found)
    assert vault.restore(redacted) == text


@pytest.mark.parametrize(
    "text",
    [
        "I'm Unable to log in since yesterday.",
        "I am having trouble with Samsung Pay.",
        "this is Android 12 on a Galaxy S10",
        "It's Not working",
        "Thanks, it works now!",
        "Folder name: Name the folder.",
        "Network name: View and change the name of the network.",
        "Press the Power key for 3 seconds and tap Restart.",
        "The 3 Way Switch is broken",
        "my name is ana lopez",  # lower case: missed (precision over recall)
        "My address is the same as before.",
        "my IP address is 10.0.0.1",
        "Wi-Fi address: 3 steps to find it",
        "The SIM tray is located in Settings",
        "I live in a flat",
    ],
)
def test_ordinary_support_text_is_left_alone(cues: Redactor, text: str) -> None:
    assert cues.analyze(text) == []


def test_no_manual_passage_question_or_prompt_is_taken_for_a_name() -> None:
    """Precision on text written by others: the Galaxy S10 manual and its questions, and
    llm-guard's prompts hold no self-introduction, sign-off or street address."""
    cues = Redactor(["PERSON", "LOCATION"])
    texts: list[str] = []
    for name in ("knowledge/galaxy_s10/kb.jsonl", "knowledge/galaxy_s10/qa.jsonl"):
        for line in (DATASETS / name).read_text().splitlines():
            row = json.loads(line)
            texts += [v for k, v in row.items() if k in ("title", "text", "question") and v]
    for path in sorted((DATASETS / "safety" / "llm_guard_tests").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            texts += [v for k, v in row.items() if k in ("text", "prompt") and isinstance(v, str)]
    assert len(texts) > 900
    flagged = [(t[s.start : s.end], t) for t in texts for s in cues.analyze(t)]
    assert flagged == []


def test_the_sign_offs_of_real_emails_are_found() -> None:
    cues = Redactor(["PERSON", "LOCATION"])
    found: dict[str, list[str]] = {}
    for path in sorted((DATASETS / "emails").rglob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        try:
            part = message.get_body(preferencelist=("plain",))
            body = part.get_content() if part is not None else ""
        except (LookupError, ValueError):
            continue
        spans = cues.analyze(body[:5000])
        if spans:
            found[path.name] = [body[s.start : s.end] for s in spans]
    assert found["text-only.eml"] == ["Bob"]
    assert found["relative.eml"] == ["Bob"]
    assert sum(len(v) for v in found.values()) <= 8, found  # sign-offs only, nothing else
