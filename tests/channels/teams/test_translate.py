"""Pure translation: every recorded Bot Framework payload, Teams-shaped samples, rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.channel import Ignored, Parsed
from bot.config import Settings
from bot.envelope import TALK_TO_HUMAN, Citation, OutboundKind, OutboundMessage, session_key
from bot.errors import PayloadInvalid
from channels.teams.plugin import TeamsChannel
from channels.teams.send import retry_after_seconds
from channels.teams.translate import ADAPTIVE_CARD, NO_TENANT, outbound_activities, split_text

ROOT = Path(__file__).resolve().parents[3]
DATASET = ROOT / ".." / "shared" / "datasets" / "payloads" / "botframework"
SAMPLES = ROOT / "tests" / "channels" / "payloads" / "teams"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, teams_app_id="app", teams_app_password=SecretStr("pw"))


def parse(data: bytes | dict[str, Any], settings: Settings, name: str = "x.json") -> Any:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return TeamsChannel.parse_payload(raw, filename=name, settings=settings)


def dataset_activities() -> list[tuple[str, bytes]]:
    """Every recorded payload: each activity of a .transcript, each other JSON file whole."""
    found: list[tuple[str, bytes]] = []
    for path in sorted(DATASET.rglob("*")):
        if path.suffix == ".transcript":
            for i, act in enumerate(json.loads(path.read_bytes())):
                found.append((f"{path.name}#{i}", json.dumps(act).encode()))
        elif path.suffix == ".json":
            found.append((path.name, path.read_bytes()))
    return found


def test_every_recorded_payload_is_an_envelope_or_ignored(settings: Settings) -> None:
    recorded = dataset_activities()
    assert len(recorded) >= 80
    parsed = ignored = 0
    for name, data in recorded:
        result = parse(data, settings, name)
        assert isinstance(result, Parsed | Ignored), name
        if isinstance(result, Parsed):
            parsed += 1
            assert result.envelope.channel == "teams"
            assert result.envelope.event_id
        else:
            ignored += 1
            assert result.reason
    assert parsed >= 25
    assert ignored >= 25  # conversation updates and the bot's own messages


def test_recorded_user_and_bot_messages(settings: Settings) -> None:
    transcript = json.loads(
        (DATASET / "botbuilder_dotnet_transcripts" / "AttachmentPrompt.transcript").read_bytes()
    )
    update, hello, prompt, upload, _ = (parse(a, settings) for a in transcript)
    assert isinstance(update, Ignored)
    assert "conversationUpdate" in update.reason
    assert isinstance(prompt, Ignored)
    assert prompt.reason == "message sent by a bot"
    assert isinstance(hello, Parsed)
    env = hello.envelope
    assert env.text == "hello"
    assert env.event_id == "2"
    assert env.account == NO_TENANT  # chatdown transcripts carry no tenant
    assert env.session_key == session_key(
        "teams", NO_TENANT, dm_peer="n4ojiaIMoHUqqelQk1FVF+kOGUw="
    )
    assert env.sent_at.isoformat() == "2018-07-18T00:52:38+00:00"
    assert isinstance(upload, Parsed)
    [att] = upload.envelope.attachments
    assert att.mime_type == "application/json"
    assert upload.envelope.text == ""


def test_a_recorded_attachment_content_file_is_ignored(settings: Settings) -> None:
    data = (DATASET / "botbuilder_dotnet_transcripts" / "ContentAttachment.json").read_bytes()
    result = parse(data, settings)
    assert isinstance(result, Ignored)


def test_a_transcript_given_whole_asks_for_its_activities(settings: Settings) -> None:
    data = (DATASET / "botbuilder_dotnet_transcripts" / "TextPrompt.transcript").read_bytes()
    with pytest.raises(PayloadInvalid, match="one by one"):
        parse(data, settings)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_personal_sample(settings: Settings) -> None:
    result = parse(sample("personal_message.json"), settings)
    assert isinstance(result, Parsed)
    env = result.envelope
    assert env.session_key == session_key(
        "teams", TENANT, dm_peer="6e2a6bb0-4f3a-4d59-9a0c-7a1b2c3d4e5f"
    )
    assert env.is_direct
    assert env.sender.name == "Megan Bowen"
    assert env.locale == "en-US"


def test_channel_sample_strips_the_mention_and_skips_the_html_copy(settings: Settings) -> None:
    result = parse(sample("channel_mention.json"), settings)
    assert isinstance(result, Parsed)
    env = result.envelope
    assert env.text == "is the VPN down for everyone?"
    assert env.mentioned
    assert not env.is_direct
    assert env.attachments == ()
    assert env.thread_id == "1714641611000"
    assert env.session_key == session_key(
        "teams",
        TENANT,
        chat="19:4a8c0b3e9f2d4c7a8b1e6f5d3c2b1a09@thread.tacv2",
        thread="1714641611000",
    )


def test_group_sample(settings: Settings) -> None:
    result = parse(sample("group_chat.json"), settings)
    assert isinstance(result, Parsed)
    assert result.envelope.text == "where can I download the invoice?"
    assert result.envelope.session_key == session_key(
        "teams", TENANT, chat="19:meeting_c0ffee00aa11bb22cc33dd44ee55ff66@thread.v2"
    )


def test_card_submit_sample_is_an_action(settings: Settings) -> None:
    result = parse(sample("card_submit.json"), settings)
    assert isinstance(result, Parsed)
    assert result.envelope.action == TALK_TO_HUMAN.id
    assert result.envelope.text == TALK_TO_HUMAN.label


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("conversation_update_bot_added.json", "conversationUpdate"),
        ("message_reaction.json", "messageReaction"),
        ("installation_update.json", "installationUpdate"),
    ],
)
def test_non_message_samples_are_ignored_on_purpose(
    settings: Settings, name: str, reason: str
) -> None:
    result = parse(sample(name), settings)
    assert isinstance(result, Ignored)
    assert result.reason.startswith(reason)


def test_a_file_upload_becomes_an_attachment(settings: Settings) -> None:
    doc = json.loads(sample("personal_message.json"))
    doc["text"] = ""
    doc["attachments"] = [
        {
            "contentType": "application/vnd.microsoft.teams.file.download.info",
            "contentUrl": "https://contoso.sharepoint.com/personal/x/Documents/report.pdf",
            "name": "report.pdf",
            "content": {"downloadUrl": "https://download.example/report.pdf", "fileType": "pdf"},
        }
    ]
    result = parse(doc, settings)
    assert isinstance(result, Parsed)
    [att] = result.envelope.attachments
    assert (att.name, att.mime_type, att.url) == (
        "report.pdf",
        "application/pdf",
        "https://download.example/report.pdf",
    )


def test_html_text_is_reduced_to_plain_text(settings: Settings) -> None:
    doc = json.loads(sample("personal_message.json"))
    doc["text"] = "<p>Hello &amp; <b>welcome</b></p>"
    result = parse(doc, settings)
    assert isinstance(result, Parsed)
    assert result.envelope.text == "Hello & welcome"


@pytest.mark.parametrize(
    ("patch", "field"),
    [({"id": None}, "id"), ({"conversation": None}, "conversation.id"), ({"text": 5}, "text")],
)
def test_broken_messages_name_the_field(
    settings: Settings, patch: dict[str, Any], field: str
) -> None:
    doc = json.loads(sample("personal_message.json"))
    doc.update(patch)
    with pytest.raises(PayloadInvalid) as caught:
        parse(doc, settings)
    assert caught.value.field == field


def test_rendering_markdown_card_and_agent_prefix() -> None:
    out = OutboundMessage(
        session_key=session_key("teams", TENANT, dm_peer="u"),
        text="**Reset** it in *Settings*.",
        citations=(Citation(doc_id="kb-1", title="Reset [guide]", url="https://d.example/r"),),
        actions=(TALK_TO_HUMAN,),
    )
    [act] = outbound_activities(out)
    assert act["textFormat"] == "markdown"
    assert act["text"] == "**Reset** it in *Settings*."
    [att] = act["attachments"]
    assert att["contentType"] == ADAPTIVE_CARD
    card = att["content"]
    assert card["body"][1]["text"] == "1. [Reset (guide)](https://d.example/r)"
    assert card["actions"] == [
        {
            "type": "Action.Submit",
            "title": "Talk to a person",
            "data": {"action": "handoff.request"},
        }
    ]
    agent = out.model_copy(
        update={"kind": OutboundKind.AGENT, "author": "Dana", "citations": (), "actions": ()}
    )
    [plain] = outbound_activities(agent)
    assert plain["text"].startswith("**Dana:** ")
    assert "attachments" not in plain
    assert outbound_activities(out.model_copy(update={"kind": OutboundKind.TYPING})) == [
        {"type": "typing"}
    ]


def test_long_text_is_split_at_paragraphs() -> None:
    text = ("a" * 15_000) + "\n\n" + ("b" * 15_000)
    parts = split_text(text)
    assert parts == ["a" * 15_000, "b" * 15_000]
    assert all(len(p) <= 20_000 for p in split_text("c" * 45_000))


def test_retry_after_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) == 1.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
