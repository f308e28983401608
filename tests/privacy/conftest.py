from __future__ import annotations

import pytest

from bot.privacy.redact import Redactor


@pytest.fixture(scope="session")
def redactor() -> Redactor:
    """One redactor for the suite (building one loads Presidio, about a second)."""
    return Redactor(["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS"])
