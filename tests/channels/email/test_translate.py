# ruff: noqa: RUF001  (Cyrillic test strings)
"""The pure parser and reply builder on the shared e-mail corpus."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from bot.channel import Ignored, Parsed
from bot.envelope import TALK_TO_HUMAN, Citation, OutboundKind, OutboundMessage
from bot.errors import PayloadInvalid, PayloadTooLarge
from channels.email.body import strip_quoted
from channels.email.render import render_reply, reply_subject
from channels.email.translate import (
    ParsedEmail,
    ThreadInfo,
    email_session_key,
    parse_email,
    parse_session_key,
)
from tests.channels.email.conftest import EMAILS, SUPPORT

FLANKER = EMAILS / "flanker_fixtures"
CPYTHON = EMAILS / "cpython_test_email"


def parse(data: bytes, **kw: object) -> ParsedEmail:
    kw.setdefault("own_address", SUPPORT)
    return parse_email(data, mailbox=SUPPORT, **kw)  # type: ignore[arg-type]


def parse_or_error(data: bytes) -> Parsed | Ignored | PayloadInvalid:
    try:
        return parse(data).result
    except PayloadInvalid as exc:
        return exc


def envelope(path: Path, **kw: object) -> Parsed:
    result = parse(path.read_bytes(), **kw).result
    assert isinstance(result, Parsed), result
    return result


def reason(path: Path) -> str:
    result = parse(path.read_bytes()).result
    assert isinstance(result, Ignored), result
    return result.reason


def test_every_shared_email_parses_or_is_rejected_deliberately() -> None:
    counts = {"parsed": 0, "ignored": 0, "invalid": 0}
    for path in sorted(EMAILS.rglob("*.eml")):
        result = parse_or_error(path.read_bytes())
        if isinstance(result, PayloadInvalid):
            assert str(result), path.name
            counts["invalid"] += 1
            continue
        if isinstance(result, Parsed):
            assert result.envelope.text.strip(), path.name
            result.envelope.model_dump_json()  # storable: no lone surrogates
            counts["parsed"] += 1
        else:
            assert result.reason, path.name
            counts["ignored"] += 1
    assert counts["parsed"] >= 50, counts
    assert counts["ignored"] >= 15, counts


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bounce__delayed.eml", "bounce (delivery status notification)"),
        ("bounce__no-mx.eml", "bounce (delivery status notification)"),
        ("bounce__gmail-invalid-address.eml", "bounce (null Return-Path)"),
        ("bounce__office365.eml", "auto-submitted (auto-replied)"),
        ("disposition-notification.eml", "read receipt (disposition notification)"),
        ("complaints__aol.eml", "abuse feedback report"),
        ("apache-message-news-mime.eml", "bulk mail (Precedence: bulk)"),
    ],
)
def test_loops_bounces_and_bulk_are_never_answered(name: str, expected: str) -> None:
    assert reason(FLANKER / name) == expected


def test_own_address_and_list_mail_are_ignored() -> None:
    data = (FLANKER / "text-only.eml").read_bytes()
    assert parse(data, own_address="bob@marley.com").result == Ignored("from our own address")
    listed = b"List-Id: <users.lists.example.org>\r\n" + data
    assert parse(listed).result == Ignored("mailing list (List-Id)")
    auto_no = b"Auto-Submitted: no\r\n" + data
    assert isinstance(parse(auto_no).result, Parsed)


def test_plain_message_session_key_and_text() -> None:
    env = envelope(FLANKER / "text-only.eml").envelope
    assert env.sender.id == "bob@marley.com"
    assert env.sender.verified is False
    root = env.event_id
    assert env.session_key == email_session_key(SUPPORT, "bob@marley.com", root)
    assert parse_session_key(env.session_key) == (SUPPORT, "bob@marley.com", root)
    assert env.text.startswith("Hello,\nI'm just testing message parsing")


def test_thread_root_is_the_first_reference() -> None:
    env = envelope(FLANKER / "long-header.eml").envelope
    refs = env.raw["references"]
    if refs:
        assert env.thread_id == refs[0]
        assert env.session_key.endswith(":thread:" + refs[0].replace(":", "%3A"))


def test_rfc2047_header_and_utf8_body_decoded() -> None:
    env = envelope(FLANKER / "bilingual-simple.eml").envelope
    assert env.raw["subject"].startswith("Simple text. How are you? Как ты")
    assert "А эта линия по-русски." in env.text


def test_legacy_charset_body_decoded() -> None:
    # The corpus' Cyrillic body, re-encoded as KOI8-R as an old client would send it.
    msg = BytesParser(policy=policy.compat32).parsebytes(
        (FLANKER / "bilingual-simple.eml").read_bytes()
    )
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    text = payload.decode("utf-8")
    del msg["Content-Transfer-Encoding"]
    msg.set_payload(text.encode("koi8-r"))
    msg.replace_header("Content-Type", "text/plain; charset=koi8-r")
    msg["Content-Transfer-Encoding"] = "8bit"
    env = envelope_from_bytes(msg.as_bytes())
    assert "А эта линия по-русски." in env.text


def envelope_from_bytes(data: bytes):  # type: ignore[no-untyped-def]
    result = parse(data).result
    assert isinstance(result, Parsed), result
    return result.envelope


def test_html_only_message_becomes_text() -> None:
    data = b"From: Ann <ann@example.org>\r\n" + (CPYTHON / "msg_40.eml").read_bytes()
    env = envelope_from_bytes(data)
    assert "<" not in env.text
    assert env.text.strip()


def test_attachments_are_kept_with_name_type_size_and_bytes() -> None:
    parsed = parse((CPYTHON / "msg_07.eml").read_bytes())
    assert isinstance(parsed.result, Parsed)
    [att] = parsed.result.envelope.attachments
    assert (att.name, att.mime_type, att.size) == ("dingusfish.gif", "image/gif", 3512)
    assert att.ref is not None
    assert parsed.payloads[att.ref][:6] == b"GIF87a"
    assert parsed.result.envelope.text == "Hi there,\n\nThis is the dingus fish."
    pic = envelope(FLANKER / "mailgun-pic.eml").envelope
    assert [(a.name, a.mime_type) for a in pic.attachments] == [("mailgun.png", "image/png")]
    assert pic.text == "Мейлган! Хахах!"


def test_broken_mime_is_tolerated_and_defects_are_listed() -> None:
    env = envelope(FLANKER / "missing-final-boundary.eml").envelope
    assert env.text == "Some body"
    assert "CloseBoundaryNotFoundDefect" in env.raw["defects"]


def test_garbage_and_missing_sender_raise_payload_invalid() -> None:
    for data in (b"", b"   ", b"\xff\xfe\x00garbage", (CPYTHON / "msg_40.eml").read_bytes()):
        with pytest.raises(PayloadInvalid):
            parse(data)


def test_attachment_over_the_limit_is_payload_too_large() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        parse((CPYTHON / "msg_07.eml").read_bytes(), max_attachment_bytes=3000)
    assert info.value.status == 413
    assert "dingusfish.gif" in str(info.value)


def test_missing_message_id_gets_a_stable_hash_id() -> None:
    data = (FLANKER / "text-only.eml").read_bytes()
    head, _, body = data.partition(b"\n\n")
    data = b"\n".join(h for h in head.split(b"\n") if not h.lower().startswith(b"message-id"))
    data += b"\n\n" + body
    a = envelope_from_bytes(data).event_id
    assert a == envelope_from_bytes(data).event_id
    assert a.endswith("@generated")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "Thanks, it works!\n\n--\nJane Doe\nACME\n\n"
            "On Mon, Jan 6, 2025 at 10:00 AM Support <s@e.com> wrote:\n> Try this.\n",
            "Thanks, it works!",
        ),
        ("Danke!\n\nAm 06.01.2025 um 10:00 schrieb Support <s@e.com>:\n> Hallo\n", "Danke!"),
        ("Steps:\n- one\n- two\n", "Steps:\n- one\n- two"),
        ("Sure\n\n-----Original Message-----\nFrom: Support\nSubject: x\n\nold\n", "Sure"),
    ],
)
def test_quoted_history_and_signatures_are_stripped(body: str, expected: str) -> None:
    assert strip_quoted(body) == expected


def test_authentication_results_from_a_trusted_server_verify_the_sender() -> None:
    data = (FLANKER / "text-only.eml").read_bytes()
    dkim = b"Authentication-Results: mx.example.net; dkim=pass header.d=marley.com\r\n"
    spf = b"Authentication-Results: mx.example.net; spf=pass smtp.mailfrom=b@mail.marley.com\r\n"
    other = b"Authentication-Results: mx.example.net; dkim=pass header.d=evil.example\r\n"
    failed = b"Authentication-Results: mx.example.net; dkim=fail header.d=marley.com\r\n"
    trusted = ["mx.example.net"]
    for extra, expected in ((dkim, True), (spf, True), (other, False), (failed, False)):
        result = parse(extra + data, trusted_authserv_ids=trusted).result
        assert isinstance(result, Parsed)
        assert result.envelope.sender.verified is expected, extra
    untrusted = parse(dkim + data, trusted_authserv_ids=["mx.other.net"]).result
    assert isinstance(untrusted, Parsed)
    assert untrusted.envelope.sender.verified is False


def test_reply_is_threaded_multipart_with_citations_as_links() -> None:
    out = OutboundMessage(
        session_key=email_session_key(SUPPORT, "jane@c.x", "r1@c.x"),
        text="**Reset** it here:\n\n- step one",
        citations=(Citation(doc_id="kb1", title="Reset guide", url="https://d.example/r"),),
        actions=(TALK_TO_HUMAN,),
        reply_to="r2@c.x",
        idempotency_key="k1",
    )
    thread = ThreadInfo("jane@c.x", "Jane", "Password", ("r1@c.x", "r2@c.x"), "r2@c.x")
    msg = render_reply(out, thread, from_address=SUPPORT, from_name="Switchboard")
    again = render_reply(out, thread, from_address=SUPPORT, from_name="Switchboard")
    assert msg["Message-ID"] == again["Message-ID"]  # stable for one idempotency key
    assert msg["Subject"] == "Re: Password"
    assert msg["In-Reply-To"] == "<r2@c.x>"
    assert str(msg["References"]).split() == ["<r1@c.x>", "<r2@c.x>"]
    assert msg["Auto-Submitted"] == "auto-replied"
    html_part = msg.get_body(preferencelist=("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert "<strong>Reset</strong>" in html
    assert 'href="https://d.example/r"' in html
    plain = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "[1] Reset guide <https://d.example/r>" in plain
    assert "talk to a person" in plain
    agent = out.model_copy(update={"kind": OutboundKind.AGENT, "author": "Ann"})
    human = render_reply(agent, thread, from_address=SUPPORT, from_name="Ann")
    assert human["Auto-Submitted"] is None


def test_reply_subject_is_not_doubled() -> None:
    assert reply_subject("Re: Help") == "Re: Help"
    assert reply_subject("AW: Hilfe") == "AW: Hilfe"
    assert reply_subject("") == "Re: Your message"
