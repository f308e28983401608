from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.channel import Ignored, Parsed
from bot.config import Settings
from bot.errors import PayloadInvalid
from channels.slack.plugin import SlackChannel
from channels.slack.translate import (
    address_of,
    decode_body,
    mrkdwn_to_markdown,
    parse_payload,
    slack_to_plain,
)
from tests.channels.slack.harness import SHARED, shared_payloads

BOLT = SHARED / "bolt_python_payloads"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, sample_kb=False)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BOLT / name).read_text())
    return data


def test_every_recorded_payload_is_an_envelope_or_ignored(settings: Settings) -> None:
    paths = shared_payloads()
    assert len(paths) >= 60
    kinds = {"parsed": 0, "ignored": 0}
    for path in paths:
        result = SlackChannel.parse_payload(
            path.read_bytes(), filename=path.name, settings=settings
        )
        assert isinstance(result, Parsed | Ignored), path.name
        kinds["parsed" if isinstance(result, Parsed) else "ignored"] += 1
        if isinstance(result, Ignored):
            assert result.reason
    assert kinds["parsed"] >= 8
    assert kinds["ignored"] >= 40


def test_app_mention_opens_a_thread_session(settings: Settings) -> None:
    result = parse_payload(
        load("test_events_say_stream__org_app_mention_event_body.json"), settings
    )
    assert isinstance(result, Parsed)
    env = result.envelope
    assert env.session_key == "slack:T111:C111:thread:1595926230.009600"
    assert env.event_id == "Ev111"
    assert env.text == "Hi there!"  # the bot's own mention is removed
    assert env.mentioned
    assert not env.is_direct
    assert env.sent_at == datetime.fromtimestamp(1595926230.0096, UTC)
    assert env.sender.verified


def test_dm_in_the_assistant_pane_is_a_dm_session(settings: Settings) -> None:
    result = parse_payload(load("test_events_assistant__user_message_event_body.json"), settings)
    assert isinstance(result, Parsed)
    assert result.envelope.session_key == "slack:T111:dm:W222"
    assert result.envelope.is_direct
    assert result.envelope.text == "When Slack was released?"


def test_thread_broadcast_stays_in_its_thread(settings: Settings) -> None:
    result = parse_payload(load("test_message_thread_broadcast__event_payload.json"), settings)
    assert isinstance(result, Parsed)
    assert result.envelope.session_key.endswith(":thread:1633663824.000500")
    assert not result.envelope.mentioned


def test_files_become_attachments_with_metadata(settings: Settings) -> None:
    payload = load("test_message_file_share__event_payload.json")
    payload["event"]["channel_type"] = "im"  # the same share, in a DM
    result = parse_payload(payload, settings)
    assert isinstance(result, Parsed)
    [att] = result.envelope.attachments
    assert (att.name, att.mime_type, att.size) == ("file.png", "image/png", 92582)
    assert att.url == "https://files.slack.com/files-pri/T111-F111/download/file.png"
    assert att.ref == "F111"
    assert result.envelope.text == "Hi there!"


def test_block_actions_become_a_button_press(settings: Settings) -> None:
    result = parse_payload(load("test_block_actions__body.json"), settings)
    assert isinstance(result, Parsed)
    env = result.envelope
    assert env.action == "a"
    assert env.event_id == "action:111.222.valid"
    assert env.session_key == "slack:T111:C111:thread:111.222"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("test_message_changed__event_payload.json", "message_changed"),
        ("test_message_deleted__event_payload.json", "message_deleted"),
        ("test_message_bot__classic_bot_message_event_payload.json", "bot_message"),
        ("test_message_bot__bot_message_event_payload.json", "own"),
        ("test_events_url_verification__event_body.json", "url_verification"),
        ("test_events__TestEvents.valid_reaction_added_body.json", "reaction_added"),
        ("test_message__message_body.json", "own"),
        ("test_view_submission__body.json", "view_submission"),
    ],
)
def test_noise_is_ignored_with_a_reason(settings: Settings, name: str, reason: str) -> None:
    result = parse_payload(load(name), settings)
    assert isinstance(result, Ignored)
    assert reason in result.reason


def test_slash_command_form_body_is_ignored(settings: Settings) -> None:
    data = (BOLT / "test_slash_command__slash_command_body.txt").read_bytes()
    result = SlackChannel.parse_payload(data, filename="x.txt", settings=settings)
    assert isinstance(result, Ignored)
    assert "slash command" in result.reason


def test_other_bots_are_kept_when_allowed(tmp_path: Path) -> None:
    allow = Settings(data_dir=tmp_path, sample_kb=False, slack_allow_bots=True)
    payload = load("test_events_ignore_self__response_url_message_event.json")
    payload["event"]["channel_type"] = "im"
    result = parse_payload(payload, allow)
    assert isinstance(result, Parsed)


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[1]", b'{"event": 1, "type": "event_callback"}', b"payload=%7Bbroken"]
)
def test_malformed_bodies_raise_payload_invalid(settings: Settings, data: bytes) -> None:
    with pytest.raises(PayloadInvalid):
        parse_payload(decode_body(data), settings)


def test_slack_markup_to_plain_and_back() -> None:
    text = "<@UBOT> ask <@U2|bob> in <#C1|general> about <https://x.example|this> &amp; <!here>"
    assert (
        slack_to_plain(text, bot_user_id="UBOT")
        == "ask @U2 in #general about this (https://x.example) & @here"
    )
    assert mrkdwn_to_markdown("*bold* and ~gone~ and _it_") == "**bold** and ~~gone~~ and _it_"


def test_address_of_session_keys() -> None:
    assert address_of("slack:T1:C9:thread:17.1") == ("T1", "C9", "17.1", None)
    assert address_of("slack:T1:dm:U7") == ("T1", None, None, "U7")
