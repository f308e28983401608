from __future__ import annotations

from bot.envelope import TALK_TO_HUMAN, Citation, OutboundKind, OutboundMessage, SessionKey
from channels.slack.render import build_messages, split_mrkdwn, to_mrkdwn

KEY = SessionKey("slack:T1:dm:U1")


def test_commonmark_becomes_mrkdwn() -> None:
    md = (
        "# Setup & use\n\nClick **Save** or *Cancel* in `a<b`; see [docs](https://x.example/?a=1&b=2)."
        "\n\n- one\n- two\n  1. nested\n\n> quoted <b>\n\n```\nif a < b:\n```\n\n~~gone~~"
    )
    assert to_mrkdwn(md) == (
        "*Setup &amp; use*\n\n"
        "Click *Save* or _Cancel_ in `a&lt;b`; see <https://x.example/?a=1&amp;b=2|docs>.\n\n"
        "• one\n• two\n    1. nested\n\n"
        "> quoted &lt;b&gt;\n\n"
        "```\nif a &lt; b:\n```\n\n"
        "~gone~"
    )


def test_split_keeps_pieces_under_the_limit_and_code_blocks_closed() -> None:
    text = "intro\n\n```\n" + "\n".join(f"line {i} " + "y" * 60 for i in range(120)) + "\n```\nend"
    pieces = split_mrkdwn(text, 1000)
    assert len(pieces) > 5
    assert all(len(p) <= 1000 for p in pieces)
    assert all(p.count("```") % 2 == 0 for p in pieces)
    body = "".join(p.replace("```\n", "").replace("\n```", "") for p in pieces)
    assert all(f"line {i} " in body for i in range(120))
    assert split_mrkdwn("short") == ["short"]


def test_messages_carry_citations_buttons_and_metadata_on_the_last_part() -> None:
    out = OutboundMessage(
        session_key=KEY,
        text="para " * 1500,
        citations=(Citation(doc_id="d1", title="Doc | one", url=None),),
        actions=(TALK_TO_HUMAN,),
        reply_to="Ev1",
        idempotency_key="answer:Ev1",
    )
    messages = build_messages(out)
    assert len(messages) == 3
    assert [m.metadata["event_payload"]["part"] for m in messages] == [0, 1, 2]
    assert all(b["type"] == "section" for m in messages[:-1] for b in m.blocks)
    last = messages[-1]
    assert [b["type"] for b in last.blocks] == ["section", "context", "actions"]
    assert last.blocks[1]["elements"][0]["text"] == ":page_facing_up: Doc ¦ one"
    button = last.blocks[2]["elements"][0]
    assert (button["action_id"], button["text"]["text"], button["value"]) == (
        "handoff.request",
        "Talk to a person",
        str(KEY),
    )
    assert last.metadata["event_payload"]["citations"] == [
        {"doc_id": "d1", "title": "Doc | one", "score": 0.0}
    ]


def test_agent_replies_name_the_agent() -> None:
    out = OutboundMessage(session_key=KEY, text="On it", kind=OutboundKind.AGENT, author="Ann <x>")
    [message] = build_messages(out)
    assert message.blocks[0]["text"]["text"] == "*Ann &lt;x&gt;:* On it"
