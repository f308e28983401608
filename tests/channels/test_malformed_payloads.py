"""Platform payloads of unexpected shapes are rejected as malformed (400), never a crash (500).

Every real payload of ``../shared/datasets/payloads`` is mutated, one field at a time: the
field removed, or its value replaced by another JSON type (null, numbers, strings, a list, an
object, a boolean). Each mutant goes through the channel's parser: it must give an envelope,
an ``Ignored`` or a :class:`~bot.errors.SwitchboardError` (the HTTP layer answers 4xx); any
other exception would be a 500, which Slack retries three times and Telegram redelivers
before any later update.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.errors import PayloadInvalid, SwitchboardError
from bot.payload import rejects_malformed
from bot.registry import channel_class

PAYLOADS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "payloads"
FOLDERS = {
    "slack": "slack/bolt_python_payloads",
    "telegram": "telegram/aiogram_v2_dataset",
    "discord": "discord/discord_api_docs_examples",
    "teams": "botframework/botbuilder_dotnet_transcripts",
}
REPLACEMENTS: list[Any] = [None, 0, -1, 1.5, "", "x", [], {}, True, "9" * 40]
PATHS_PER_PAYLOAD = 40

Path_ = tuple[str | int, ...]


def recorded(channel: str) -> Iterator[tuple[str, Any]]:
    """The channel's recorded payloads: JSON files, and each activity of a transcript."""
    for path in sorted((PAYLOADS / FOLDERS[channel]).iterdir()):
        if path.suffix == ".json":
            try:
                yield path.name, json.loads(path.read_text())
            except ValueError:
                continue
        elif path.suffix == ".transcript":
            for i, activity in enumerate(json.loads(path.read_text())):
                yield f"{path.name}#{i}", activity


def field_paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every object key and the first three items of every list, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from field_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):
            yield (*prefix, i)
            yield from field_paths(value, (*prefix, i))


def mutant(doc: Any, path: Path_, value: Any, *, remove: bool) -> Any:
    """A copy of ``doc`` with the field at ``path`` removed or set to ``value``."""
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if remove:
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    return doc


@pytest.mark.parametrize("channel", sorted(FOLDERS))
def test_no_mutated_payload_crashes_the_parser(channel: str, tmp_path: Path) -> None:
    cls = channel_class(channel)
    settings = Settings(data_dir=tmp_path)
    rng = random.Random(0)
    crashes: dict[tuple[str, str], str] = {}
    mutants = rejected = 0
    for name, doc in recorded(channel):
        paths = list(field_paths(doc))
        if len(paths) > PATHS_PER_PAYLOAD:
            paths = rng.sample(paths, PATHS_PER_PAYLOAD)
        for path in paths:
            variants = [(None, True)] + [(v, False) for v in REPLACEMENTS]
            for value, remove in variants:
                data = json.dumps(mutant(doc, path, value, remove=remove)).encode()
                mutants += 1
                try:
                    cls.parse_payload(data, filename=name, settings=settings)
                except SwitchboardError:
                    rejected += 1
                except Exception as exc:  # the bug this test is for
                    where = f"{name} {'.'.join(map(str, path))}={value!r}"
                    crashes.setdefault((type(exc).__name__, str(exc)[:80]), where)
    assert mutants > 1000
    assert rejected > 0  # the mutations do reach the validation
    assert crashes == {}


def test_shape_errors_become_payload_invalid_and_switchboard_errors_pass() -> None:
    @rejects_malformed("acme")
    def translate(doc: Any) -> str:
        if doc == "refused":
            raise PayloadInvalid("no id", field="id")
        return str(doc["user"]["id"])

    assert translate({"user": {"id": 7}}) == "7"
    with pytest.raises(PayloadInvalid, match="malformed acme payload") as info:
        translate({"user": 7})
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(PayloadInvalid, match="no id"):
        translate("refused")


def email_mutants(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """Truncated copies, copies with a few bytes flipped, and mangled headers of a message."""
    for part in (2, 3, 5, 10):
        yield data[: len(data) // part]
    for _ in range(6):
        flipped = bytearray(data)
        for _ in range(5):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        yield bytes(flipped)
    yield data.replace(b"charset=", b"charset=x-unknown-", 1)
    yield data.replace(b"From:", b"From: =?utf-8?b?!!!?= <>\nX-Old-From:", 1)


def test_no_damaged_email_crashes_the_parser(tmp_path: Path) -> None:
    """A message the IMAP reader or the SMTP listener cannot parse is rejected and logged; an
    exception from the standard library's parser would stop the IMAP session on the same
    message at every reconnect (or make the sending server retry it for days)."""
    cls = channel_class("email")
    settings = Settings(data_dir=tmp_path)
    rng = random.Random(0)
    crashes: dict[tuple[str, str], str] = {}
    mutants = 0
    for path in sorted((PAYLOADS.parent / "emails").rglob("*.eml")):
        for data in email_mutants(path.read_bytes(), rng):
            mutants += 1
            try:
                cls.parse_payload(data, filename=path.name, settings=settings)
            except SwitchboardError:
                pass
            except Exception as exc:  # the bug this test is for
                crashes.setdefault((type(exc).__name__, str(exc)[:80]), path.name)
    assert mutants > 1000
    assert crashes == {}
