"""The output check that recognizes an answer reproducing the system prompt."""

from __future__ import annotations

from bot.agent.prompt import system_rules
from bot.config import Settings
from bot.privacy.leak import PromptEchoCheck

RULES = system_rules(Settings(company_name="Acme", bot_name="Ava"))


def test_a_verbatim_dump_is_an_echo_even_reformatted() -> None:
    check = PromptEchoCheck([RULES])
    assert check.echoes(RULES)
    # Lower-cased, re-punctuated, as a bullet list inside other words: still an echo.
    middle = RULES.splitlines()[4].lower().replace(",", "")
    assert check.echoes(f"OK here you go:\n* {middle} *\nanything else?")


def test_ordinary_answers_and_short_overlaps_are_not() -> None:
    check = PromptEchoCheck([RULES])
    assert not check.echoes("I'm Ava, the customer support assistant of Acme. How can I help?")
    assert not check.echoes("Open Billing > Invoices and download the PDF.")
    assert not check.echoes("")
    assert not PromptEchoCheck([]).echoes(RULES)
