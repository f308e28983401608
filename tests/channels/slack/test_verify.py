from __future__ import annotations

import json

import pytest

from bot.errors import SignatureInvalid
from channels.slack.verify import verify_request
from tests.channels.slack.harness import SHARED

VECTOR = json.loads((SHARED / "signing" / "slack_signing_test_vector.json").read_text())
NOW = float(VECTOR["mock_clock_now"])


def test_slack_test_vector_verifies() -> None:
    verify_request(VECTOR["signing_secret"], VECTOR["body"].encode(), VECTOR["headers"], now=NOW)


def test_headers_are_case_insensitive() -> None:
    headers = {k.lower(): v for k, v in VECTOR["headers"].items()}
    verify_request(VECTOR["signing_secret"], VECTOR["body"].encode(), headers, now=NOW)


@pytest.mark.parametrize(
    ("body", "headers", "now", "message"),
    [
        (VECTOR["body"] + "------", VECTOR["headers"], NOW, "does not match"),
        (VECTOR["body"], VECTOR["headers"], NOW + 301, "five-minute"),
        (VECTOR["body"], VECTOR["headers"], NOW - 301, "five-minute"),
        (VECTOR["body"], {}, NOW, "missing"),
        (VECTOR["body"], {**VECTOR["headers"], "X-Slack-Request-Timestamp": "soon"}, NOW, "Unix"),
    ],
)
def test_bad_requests_are_refused(
    body: str, headers: dict[str, str], now: float, message: str
) -> None:
    with pytest.raises(SignatureInvalid, match=message):
        verify_request(VECTOR["signing_secret"], body.encode(), headers, now=now)


def test_the_real_clock_refuses_the_old_vector() -> None:
    with pytest.raises(SignatureInvalid):
        verify_request(VECTOR["signing_secret"], VECTOR["body"].encode(), VECTOR["headers"])
