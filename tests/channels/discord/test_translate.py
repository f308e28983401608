"""The pure Discord translations, on the recorded payloads of ../shared/datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.channel import Ignored, Parsed
from bot.cli import main
from bot.config import Settings
from bot.envelope import Citation, OutboundKind, OutboundMessage, SessionKey
from bot.errors import PayloadInvalid
from channels.discord.plugin import DiscordChannel
from channels.discord.render import (
    MAX_MESSAGE_CHARS,
    citations_embed,
    embed_citations,
    render_text,
    split_message,
    thread_name,
)
from channels.discord.translate import address_of, bot_id_from_token
from tests.channels.discord.frames import (
    CHANNEL,
    CUSTOMER,
    DOCS,
    GUILD,
    SLASH_EXAMPLE,
    TOKEN,
    button_interaction,
    frame,
    message,
    recorded,
    support_interaction,
)
from tests.fakes.discord_api import BOT_ID


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, discord_bot_token=SecretStr(TOKEN), sample_kb=False)


def parse(data: bytes | dict[str, object], settings: Settings) -> Parsed | Ignored:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return DiscordChannel.parse_payload(raw, filename="x.json", settings=settings)


def test_every_recorded_payload_is_an_envelope_or_ignored_with_a_reason(
    settings: Settings,
) -> None:
    payloads = recorded()
    assert len(payloads) >= 50
    parsed, reasons = [], set()
    for name, data in payloads:
        result = parse(data, settings)
        assert isinstance(result, Parsed | Ignored), name
        if isinstance(result, Ignored):
            assert result.reason, name
            reasons.add(result.reason)
        else:
            parsed.append(name)
    assert parsed == ["message__Example_Message__L167.json"]
    assert "crossposted announcement" in reasons
    assert "gateway opcode 10 (hello) carries no message" in reasons
    assert "command /cardsearch is not handled by this bot" in reasons


def test_docs_example_message_is_a_direct_message(settings: Settings) -> None:
    result = parse((DOCS / "message__Example_Message__L167.json").read_bytes(), settings)
    assert isinstance(result, Parsed)
    env = result.envelope
    assert env.session_key == f"discord:{BOT_ID}:dm:53908099506183680"
    assert env.event_id == "334385199974967042"
    assert env.text == "Supa Hot"
    assert env.sender.id == "53908099506183680"
    assert env.sender.name == "Mason"
    assert env.is_direct is True
    assert env.sent_at.isoformat() == "2017-07-11T17:27:07.299000+00:00"


def test_without_a_token_dm_sessions_use_the_account_bot(tmp_path: Path) -> None:
    result = parse(
        (DOCS / "message__Example_Message__L167.json").read_bytes(),
        Settings(data_dir=tmp_path, sample_kb=False),
    )
    assert isinstance(result, Parsed)
    assert result.envelope.session_key == "discord:bot:dm:53908099506183680"


def test_a_mention_in_a_guild_channel_names_the_thread_started_from_it(
    settings: Settings,
) -> None:
    data = message("1300", "how do I <#42> export?", guild_id=GUILD, mention_bot=True)
    result = parse(frame("MESSAGE_CREATE", data), settings)
    assert isinstance(result, Parsed)
    env = result.envelope
    assert env.session_key == f"discord:{GUILD}:{CHANNEL}:thread:1300"
    assert env.account == GUILD
    assert env.thread_id == "1300"
    assert env.text == "how do I #channel export?"
    assert env.mentioned is True
    assert env.is_direct is False


def test_guild_messages_without_mention_and_bot_messages_are_ignored(
    settings: Settings,
) -> None:
    plain = parse(frame("MESSAGE_CREATE", message("1", "hi all", guild_id=GUILD)), settings)
    assert plain == Ignored("guild message that does not mention the bot")
    own = parse(message("2", "Echo", author_id=BOT_ID), settings)
    assert own == Ignored("our own message")
    other_bot = parse(message("3", "beep", author_id="77", bot=True), settings)
    assert other_bot == Ignored("message from a bot, a webhook or the system")
    hook = parse(message("4", "news", webhook_id="9"), settings)
    assert isinstance(hook, Ignored)
    join = parse(message("5", "", type=7), settings)
    assert join == Ignored("message type 7 is not a customer message")
    empty = parse(message("6", "", guild_id=GUILD), settings)
    assert isinstance(empty, Ignored)
    assert "Message Content intent" in empty.reason


def test_attachments_and_user_mentions(settings: Settings) -> None:
    data = message(
        "7",
        "see <@99> screenshot",
        attachments=[
            {
                "id": "1",
                "filename": "shot.png",
                "size": 2048,
                "url": "https://cdn.discordapp.com/attachments/1/shot.png",
                "content_type": "image/png",
            }
        ],
        mentions=[{"id": "99", "username": "ana", "global_name": "Ana", "avatar": None}],
    )
    result = parse(data, settings)
    assert isinstance(result, Parsed)
    env = result.envelope
    assert env.text == "see @Ana screenshot"
    [att] = env.attachments
    assert (att.name, att.mime_type, att.size) == ("shot.png", "image/png", 2048)


def test_support_and_button_interactions(settings: Settings) -> None:
    in_channel = parse(support_interaction("1400", question="refund?"), settings)
    assert isinstance(in_channel, Ignored), "a guild /support needs its thread first"
    in_dm = parse(support_interaction("1401", question="refund?", guild_id=None), settings)
    assert isinstance(in_dm, Parsed)
    assert in_dm.envelope.session_key == f"discord:{BOT_ID}:dm:{CUSTOMER}"
    assert in_dm.envelope.text == "refund?"
    press = button_interaction(
        "1402",
        "handoff.request",
        message_id="5",
        channel_id="777",
        guild_id=GUILD,
        parent_id=CHANNEL,
    )
    result = parse(frame("INTERACTION_CREATE", press), settings)
    assert isinstance(result, Parsed)
    assert result.envelope.action == "handoff.request"
    assert result.envelope.session_key == f"discord:{GUILD}:{CHANNEL}:thread:777"
    assert result.envelope.event_id == "1402"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"op": 0, "t": "MESSAGE_CREATE", "d": {"id": "1", "channel_id": "2"}}, None),
        ({"op": 0, "t": "MESSAGE_CREATE", "d": []}, "d"),
        ({"op": "0", "t": "MESSAGE_CREATE", "d": {}}, "op"),
        ({"op": 0, "d": {}}, "t"),
        (
            {
                "op": 0,
                "t": "MESSAGE_CREATE",
                "d": {"id": "1", "channel_id": "2", "author": {"id": "3"}, "timestamp": "soon"},
            },
            "d.timestamp",
        ),
    ],
)
def test_malformed_frames_are_rejected_with_a_clear_error(
    settings: Settings, data: dict[str, object], field: str | None
) -> None:
    with pytest.raises(PayloadInvalid) as err:
        parse(data, settings)
    if field is not None:
        assert err.value.field == field
    else:
        assert "author" in str(err.value)
    assert err.value.status == 400


def test_not_json_is_rejected(settings: Settings) -> None:
    with pytest.raises(PayloadInvalid, match="JSON"):
        parse(b'{"op": 0, ', settings)


def test_split_message_keeps_every_character_and_the_limit() -> None:
    paragraphs = [f"Paragraph {n}. " + "word " * 90 for n in range(20)]
    text = "\n\n".join(paragraphs)
    parts = split_message(text)
    assert len(parts) > 1
    assert all(len(p) <= MAX_MESSAGE_CHARS for p in parts)
    assert all(p.startswith("Paragraph") for p in parts), "cut inside a paragraph"
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())
    hard = split_message("x" * 4500)
    assert [len(p) for p in hard] == [2000, 2000, 500]
    assert split_message("short") == ["short"]


def test_split_message_reopens_a_cut_code_block() -> None:
    code = "```python\n" + "\n".join(f"print({n})" for n in range(400)) + "\n```"
    parts = split_message(code)
    assert len(parts) > 1
    assert all(len(p) <= MAX_MESSAGE_CHARS for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)
    assert parts[1].startswith("```python\n")


def test_citations_embed_round_trip() -> None:
    cites = (
        Citation(doc_id="a", title="Reset [password]", url="https://d.example/a"),
        Citation(doc_id="b", title="FAQ"),
    )
    embed = citations_embed(cites)
    assert embed is not None
    assert embed["title"] == "Sources"
    assert embed_citations(embed) == [
        ("Reset (password)", "https://d.example/a"),
        ("FAQ", None),
    ]
    assert citations_embed(()) is None


def test_agent_replies_are_signed_and_keys_map_back_to_addresses() -> None:
    key = SessionKey(f"discord:{GUILD}:{CHANNEL}:thread:55")
    out = OutboundMessage(session_key=key, text="On it.", kind=OutboundKind.AGENT, author="Ana")
    assert render_text(out) == "**Ana** (support team): On it."
    assert address_of(key).channel_id == "55"
    assert address_of(f"discord:{BOT_ID}:dm:{CUSTOMER}").user_id == CUSTOMER
    with pytest.raises(PayloadInvalid):
        address_of("slack:T1:C1")


def test_token_and_thread_name_helpers() -> None:
    assert bot_id_from_token(TOKEN) == BOT_ID
    assert bot_id_from_token("not-a-token") is None
    assert thread_name("   ", "Support: Ana") == "Support: Ana"
    long = thread_name("word " * 50, "x")
    assert len(long) <= 100
    assert long.endswith("…")


def test_cli_parse_discord(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = DOCS / "message__Example_Message__L167.json"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"op": 0, "t": "MESSAGE_CREATE", "d": {"id": "1"}}))
    code = main(
        ["parse", "--data-dir", str(tmp_path), "discord", str(good), str(bad), str(SLASH_EXAMPLE)]
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[0]["envelope"]["text"] == "Supa Hot"
    assert "d.channel_id" in str(lines[1]["error"]) or "d.author" in str(lines[1]["error"])
    assert "ignored" in json.dumps(lines[2]).lower()
