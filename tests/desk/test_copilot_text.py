"""The copilot's summary keeps what the customer wants, not their request for a person."""

from __future__ import annotations

import pytest

from bot.console.copilot import without_request


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("My invoice is wrong, I want a person.", "My invoice is wrong"),
        ("I need a human please. The app crashes on login", "The app crashes on login"),
        ("Talk to a person", ""),
        ("How do I add a human agent?", "How do I add a human agent?"),  # a question, kept
    ],
)
def test_the_request_for_a_person_is_left_out(text: str, kept: str) -> None:
    assert without_request(text) == kept
