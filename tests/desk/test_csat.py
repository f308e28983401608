"""The CSAT survey through a real hub: asked on resolve, answered by button or text, or skipped."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.auth import add_agent
from bot.desk import csat
from bot.envelope import InboundMessage, OutboundKind, Participant, SessionKey, utcnow
from bot.hub import Hub
from channels.email.body import strip_quoted
from channels.memory.plugin import MemoryChannel
from channels.memory.pytest_plugin import ScriptedAgent

KEY = SessionKey("memory:default:c1")


async def _resolved(hub: Hub, channel: MemoryChannel) -> None:
    """The customer asks something, an agent claims and resolves: the survey goes out."""
    alice = await add_agent(hub.store, "alice", "correct horse battery", "Alice")
    await channel.push_message("How do I export invoices?", user_name="Dana")
    assert (await channel.pop_message(KEY)).kind == OutboundKind.ANSWER
    await hub.handoff.escalate(KEY, "customer_request")
    await hub.handoff.claim(KEY, alice)
    await hub.handoff.resolve(KEY, alice)
    while True:
        out = await channel.pop_message(KEY)
        if out.text == csat.PROMPT:
            break
    assert [a.id for a in out.actions] == [f"csat.{n}" for n in range(1, 6)]
    assert out.kind == OutboundKind.NOTICE


async def _ratings(hub: Hub) -> list[tuple[str | None, int]]:
    now = utcnow()
    rows = await hub.handoff.desk.ratings(since=now - timedelta(hours=1), until=now)
    return [(r.agent, r.rating) for r in rows]


async def test_a_button_press_is_stored_per_agent_and_thanked(
    memory_hub: Hub, memory_channel: MemoryChannel, scripted_agent: ScriptedAgent
) -> None:
    await _resolved(memory_hub, memory_channel)
    asked = len(scripted_agent.turns)
    await memory_channel.push_message("4", action="csat.4")
    assert (await memory_channel.pop_message(KEY)).text == csat.THANKS
    assert await _ratings(memory_hub) == [("alice", 4)]
    assert len(scripted_agent.turns) == asked  # the bot never saw the rating
    # The survey is answered: a later "5" is an ordinary message for the bot.
    await memory_channel.push_message("5")
    assert (await memory_channel.pop_message(KEY)).text == "Echo: 5"
    assert await _ratings(memory_hub) == [("alice", 4)]


async def test_a_typed_rating_counts_and_anything_else_goes_to_the_bot(
    memory_hub: Hub, memory_channel: MemoryChannel, scripted_agent: ScriptedAgent
) -> None:
    await _resolved(memory_hub, memory_channel)
    await memory_channel.push_message("Thanks! And how do I add a colleague?")
    answer = await memory_channel.pop_message(KEY)
    assert answer.text == "Echo: Thanks! And how do I add a colleague?"
    await memory_channel.push_message("2")  # the survey was closed by the other message
    assert (await memory_channel.pop_message(KEY)).text == "Echo: 2"
    assert await _ratings(memory_hub) == []

    alice = await memory_hub.store.agent("alice")
    assert alice is not None
    await memory_hub.handoff.claim(KEY, alice)
    await memory_hub.handoff.resolve(KEY, alice)
    while (await memory_channel.pop_message(KEY)).text != csat.PROMPT:
        pass
    await memory_channel.push_message("5 stars")
    assert (await memory_channel.pop_message(KEY)).text == csat.THANKS
    assert await _ratings(memory_hub) == [("alice", 5)]


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("4", 4),
        (" 5 ", 5),
        ("3/5", 3),
        ("2 out of 5", 2),
        ("1 star", 1),
        ("5!", 5),
        ("5 😀", 5),
        ("1 😞", 1),
        ("4 ★★★★", 4),
        ("6", None),
        ("0", None),
        ("4 printers are broken", None),
        ("45", None),
        ("", None),
    ],
)
def test_what_counts_as_a_rating(text: str, rating: int | None) -> None:
    msg = InboundMessage(
        event_id="e",
        channel="email",
        account="support@example.com",
        session_key=SessionKey("email:support%40example.com:dm:x"),
        sender=Participant(id="x"),
        text=text,
    )
    assert csat.parse_rating(msg) == rating


def test_an_email_reply_with_its_quote_is_a_rating() -> None:
    # A mail client's reply: the number on top, the survey quoted below (e-mail has no buttons).
    body = (
        "4\n\nOn Sun, 6 Dec 2026 at 14:02, Acme Support <support@example.com> wrote:\n"
        f"> {csat.PROMPT}\n>\n> --\n> Acme Support\n"
    )
    msg = InboundMessage(
        event_id="m1",
        channel="email",
        account="support@example.com",
        session_key=SessionKey("email:support%40example.com:dm:x"),
        sender=Participant(id="x"),
        text=strip_quoted(body),
    )
    assert csat.parse_rating(msg) == 4


async def test_a_rating_survives_a_crash_before_the_survey_closes_and_counts_once(
    memory_hub: Hub, memory_channel: MemoryChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _resolved(memory_hub, memory_channel)
    survey = memory_hub.handoff.survey
    rating = InboundMessage(
        event_id="r1",
        channel="memory",
        account="default",
        session_key=KEY,
        sender=Participant(id="u1", name="Dana"),
        text="5",
    )
    set_meta = memory_hub.store.set_meta

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("worker killed")

    monkeypatch.setattr(memory_hub.store, "set_meta", crash)
    conv = await memory_hub.store.conversation(KEY)
    assert conv is not None
    with pytest.raises(RuntimeError):
        await survey.take(conv, [rating])
    assert await _ratings(memory_hub) == [("alice", 5)]  # stored before the survey closed

    monkeypatch.setattr(memory_hub.store, "set_meta", set_meta)
    conv = await memory_hub.store.conversation(KEY)  # the re-run turn: survey still open
    assert conv is not None
    assert await survey.take(conv, [rating]) == []
    assert await _ratings(memory_hub) == [("alice", 5)]  # not twice
