from __future__ import annotations

import pytest

from bot.privacy.vault import Vault


def test_same_value_same_token_and_numbering_per_label() -> None:
    vault = Vault()
    a = vault.token_for("EMAIL", "ana@example.org")
    b = vault.token_for("EMAIL", "bo@example.org")
    assert (a, b) == ("<EMAIL_1>", "<EMAIL_2>")
    assert vault.token_for("EMAIL", "ana@example.org") == a
    assert vault.token_for("PHONE", "+1 415 555 0132") == "<PHONE_1>"
    assert len(vault) == 3


def test_restore_replaces_only_issued_tokens() -> None:
    vault = Vault()
    token = vault.token_for("EMAIL", "ana@example.org")
    text = f"Sent to {token}; <EMAIL_9> and <PHONE_1> stay as they are."
    assert vault.restore(text) == (
        "Sent to ana@example.org; <EMAIL_9> and <PHONE_1> stay as they are."
    )


def test_tokens_typed_by_the_customer_are_never_issued() -> None:
    vault = Vault()
    vault.reserve("my address is literally <EMAIL_1>")
    assert vault.token_for("EMAIL", "ana@example.org") == "<EMAIL_2>"
    assert vault.restore("<EMAIL_1> <EMAIL_2>") == "<EMAIL_1> ana@example.org"


def test_restore_data_reaches_nested_tool_arguments() -> None:
    vault = Vault()
    token = vault.token_for("EMAIL", "ana@example.org")
    args = {"to": token, "cc": [token, "x"], "n": 3, "meta": {token: True}}
    assert vault.restore_data(args) == {
        "to": "ana@example.org",
        "cc": ["ana@example.org", "x"],
        "n": 3,
        "meta": {"ana@example.org": True},
    }


def test_repr_never_shows_values() -> None:
    vault = Vault()
    vault.token_for("EMAIL", "ana@example.org")
    assert "ana" not in repr(vault)
    assert repr(vault) == "Vault(tokens=1)"


def test_bad_label_and_empty_value_are_refused() -> None:
    vault = Vault()
    with pytest.raises(ValueError, match="empty"):
        vault.token_for("EMAIL", "")
    with pytest.raises(ValueError, match="token syntax"):
        vault.token_for("e-mail", "x")


def test_stream_restorer_handles_tokens_split_across_chunks() -> None:
    from bot.privacy.vault import StreamRestorer

    vault = Vault()
    vault.token_for("EMAIL", "ana@example.org")
    vault.token_for("PHONE", "+1 415 555 0132")
    stream = StreamRestorer(vault)
    chunks = ["Sent to <EMA", "IL_1", "> and call <", "PHONE_1> now; a < b and <x", "yz"]
    shown = [stream.feed(c) for c in chunks]
    shown.append(stream.flush())
    assert shown[0] == "Sent to "
    assert "".join(shown) == "Sent to ana@example.org and call +1 415 555 0132 now; a < b and <xyz"
    for piece in shown:
        assert "<EMA" not in piece
        assert "<PHONE" not in piece
