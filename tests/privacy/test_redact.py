from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.errors import ConfigError
from bot.privacy.redact import Redactor, check_entity_types
from bot.privacy.vault import Vault

EMAIL = "ana.lopez@example.org"
PHONE = "+1 415 555 0132"
CARD = "4111 1111 1111 1111"  # a Visa test number (passes the Luhn check)


def test_email_phone_and_card_are_replaced_and_restored(redactor: Redactor) -> None:
    text = f"Hi, mail me at {EMAIL} or call {PHONE}. My card is {CARD}, it was charged twice."
    redacted, vault = redactor.redact(text)
    assert redacted == (
        "Hi, mail me at <EMAIL_1> or call <PHONE_1>. My card is <CREDIT_CARD_1>, "
        "it was charged twice."
    )
    for value in (EMAIL, PHONE, CARD, "4111", "0132", "example.org"):
        assert value not in redacted
    assert vault.restore(redacted) == text
    answer = "I have sent the refund confirmation to <EMAIL_1>."
    assert vault.restore(answer) == f"I have sent the refund confirmation to {EMAIL}."


def test_offsets_are_characters_of_non_ascii_input(redactor: Redactor) -> None:
    text = f"Grüße aus Köln 📞 — écrivez à {EMAIL} ou appelez le {PHONE} ✉️ merci"
    _redacted, _vault, spans = redactor.redact_spans(text)
    assert [(s.type, text[s.start : s.end]) for s in spans] == [
        ("EMAIL_ADDRESS", EMAIL),
        ("PHONE_NUMBER", PHONE),
    ]
    # Code points, not UTF-8 bytes: the e-mail starts after the emoji and accents.
    assert spans[0].start == text.index(EMAIL)
    assert spans[0].start != text.encode().index(EMAIL.encode())


def test_one_vault_numbers_a_whole_turn(redactor: Redactor) -> None:
    first, vault = redactor.redact(f"I am {EMAIL}")
    second, same = redactor.redact(f"ticket for {EMAIL}, copy bo@example.net", vault=vault)
    assert same is vault
    assert first == "I am <EMAIL_1>"
    assert second == "ticket for <EMAIL_1>, copy <EMAIL_2>"


def test_luhn_invalid_card_and_bad_iban_checksum_are_left(redactor: Redactor) -> None:
    text = "order 4111 1111 1111 1112, iban DE89 3704 0044 0532 0130 01"
    assert redactor.analyze(text) == []
    good = "iban DE89 3704 0044 0532 0130 00, ip 2001:db8::17"
    assert [s.type for s in redactor.analyze(good)] == ["IBAN_CODE", "IP_ADDRESS"]


def test_entities_argument_limits_what_is_redacted(redactor: Redactor) -> None:
    text = f"{EMAIL} / {PHONE}"
    redacted, _ = redactor.redact(text, entities=["PHONE_NUMBER"])
    assert redacted == f"{EMAIL} / <PHONE_1>"
    assert redactor.redact(text, entities=[])[0] == text


def test_settings_choose_entities_per_channel(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        pii_entities=["EMAIL_ADDRESS", "PHONE_NUMBER"],
        pii_channel_entities={"slack": ["PHONE_NUMBER"]},
    )
    assert settings.pii_entities_for("slack") == ["PHONE_NUMBER"]
    assert settings.pii_entities_for("webchat") == ["EMAIL_ADDRESS", "PHONE_NUMBER"]
    redactor = Redactor.from_settings(settings)
    text = f"{EMAIL} {PHONE}"
    slack, _ = redactor.redact(text, entities=settings.pii_entities_for("slack"))
    web, _ = redactor.redact(text, entities=settings.pii_entities_for("webchat"))
    assert slack == f"{EMAIL} <PHONE_1>"
    assert web == "<EMAIL_1> <PHONE_1>"


def test_env_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHBOARD_PII_ENTITIES", "EMAIL_ADDRESS, IBAN_CODE")
    monkeypatch.setenv("SWITCHBOARD_PII_CHANNEL_ENTITIES", '{"email": []}')
    settings = Settings(data_dir=tmp_path)
    assert settings.pii_entities == ["EMAIL_ADDRESS", "IBAN_CODE"]
    assert settings.pii_entities_for("email") == []


def test_unknown_entity_types_are_config_errors(tmp_path: Path) -> None:
    assert check_entity_types(["email_address", "EMAIL_ADDRESS"]) == ["EMAIL_ADDRESS"]
    with pytest.raises(ConfigError, match="SOCIAL"):
        check_entity_types(["SOCIAL"])
    settings = Settings(data_dir=tmp_path, pii_channel_entities={"slack": ["NAMES"]})
    with pytest.raises(ConfigError, match="NAMES"):
        Redactor.from_settings(settings)


def test_without_a_model_names_come_from_cues_and_none_is_downloaded() -> None:
    redactor = Redactor(["EMAIL_ADDRESS", "PERSON", "LOCATION"])
    assert redactor.entities == ("EMAIL_ADDRESS", "PERSON", "LOCATION")
    assert redactor.cue_only == ("PERSON", "LOCATION")
    redacted, _ = redactor.redact("Ana Lopez wrote from Valencia.")  # no cue: needs NER
    assert redacted == "Ana Lopez wrote from Valencia."
    with pytest.raises(ConfigError, match="never downloads"):
        Redactor(["PERSON"], spacy_model="en_core_web_lg")


def test_a_local_spacy_pipeline_gives_person_and_location(tmp_path: Path) -> None:
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(  # type: ignore[attr-defined]
        [
            {"label": "PERSON", "pattern": [{"LOWER": "ana"}, {"LOWER": "lopez"}]},
            {"label": "GPE", "pattern": "Valencia"},
        ]
    )
    nlp.to_disk(tmp_path / "pipeline")
    redactor = Redactor(["PERSON", "LOCATION"], spacy_model=str(tmp_path / "pipeline"))
    assert redactor.cue_only == ()
    text = "This is Ana Lopez from Valencia, my parcel is late."
    redacted, vault = redactor.redact(text)
    assert redacted == "This is <PERSON_1> from <LOCATION_1>, my parcel is late."
    assert vault.restore(redacted) == text


def test_detection_makes_no_network_lookup(
    redactor: Redactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Presidio's stock e-mail check fetches the Public Suffix List; ours must not."""
    lookups: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        lookups.append(args[0])
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    fresh = Redactor(["EMAIL_ADDRESS", "URL"])
    spans = fresh.analyze("write to user@xn--80ak6aa92e.com or see https://example.co.uk/help")
    assert [s.type for s in spans] == ["EMAIL_ADDRESS", "URL"]
    assert redactor.analyze(f"{EMAIL}")[0].type == "EMAIL_ADDRESS"
    assert lookups == []


def test_no_message_text_reaches_the_logs(
    redactor: Redactor, caplog: pytest.LogCaptureFixture
) -> None:
    """Presidio logs the words around each match at DEBUG; the redactor keeps it quiet."""
    import logging

    caplog.set_level(logging.DEBUG)
    redactor.redact(f"my card {CARD}, mail {EMAIL}")
    assert "4111" not in caplog.text
    assert EMAIL not in caplog.text


def test_tokenize_reuses_one_analysis_across_vaults(redactor: Redactor) -> None:
    """The agent analyzes a text once and tokenizes it into each turn's vault."""
    text = "Typed <EMAIL_1> literally; real: ana@example.org, again ana@example.org"
    spans = redactor.analyze(text, ["EMAIL_ADDRESS"])
    first = Vault()
    one = Redactor.tokenize(text, spans, first)
    assert one == "Typed <EMAIL_1> literally; real: <EMAIL_2>, again <EMAIL_2>"
    assert first.restore(one) == text  # the literal token is not anyone's value

    second = Vault()
    second.token_for("EMAIL", "bob@example.com")  # an earlier history value of that turn
    plain = "real: ana@example.org"
    two = Redactor.tokenize(plain, redactor.analyze(plain, ["EMAIL_ADDRESS"]), second)
    assert two == "real: <EMAIL_2>"
    assert second.restore(two) == plain


@pytest.mark.parametrize(
    ("entity", "text", "value"),
    [
        ("ES_NIF", "Mi NIF es 55555555K, gracias", "55555555K"),
        ("PL_PESEL", "PESEL: 44051401359", "44051401359"),
        ("UK_NHS", "NHS number 401 023 2137", "401 023 2137"),
    ],
)
def test_identity_numbers_with_a_valid_check_digit_are_redacted(
    entity: str, text: str, value: str
) -> None:
    redactor = Redactor([entity])
    redacted, vault = redactor.redact(text)
    assert value not in redacted
    assert f"<{entity}_1>" in redacted
    assert vault.restore(redacted) == text
    wrong_check = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert redactor.analyze(text.replace(value, wrong_check)) == []


def test_a_value_containing_another_is_typed_as_the_longer_one() -> None:
    """The digit groups of this IPv6 address pass the Aadhaar check digit: the address is
    still one ``<IP_ADDRESS_1>``, not an Aadhaar number with its ends in clear."""
    redactor = Redactor(["IP_ADDRESS", "IN_AADHAAR"])
    text = "my ip: 684D:1111:222:3333:4444:5555:6:77"
    assert redactor.redact(text)[0] == "my ip: <IP_ADDRESS_1>"
