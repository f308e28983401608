"""Markdown to Telegram HTML: escaping, allowed tags, 4,096-character parts."""

from __future__ import annotations

from html.parser import HTMLParser

from bot.envelope import Citation
from channels.telegram.render import MAX_MESSAGE_CHARS, render_message, utf16_len

ALLOWED = {"b", "i", "s", "u", "a", "code", "pre", "blockquote"}


class _Checker(HTMLParser):
    """Fails on tags Telegram does not know and on unbalanced tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in ALLOWED, tag
        if tag == "a":
            assert [k for k, _ in attrs] == ["href"]
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, tag
        assert self.stack.pop() == tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check(part: str) -> str:
    """Assert ``part`` is valid Telegram HTML; return its visible text."""
    checker = _Checker()
    checker.feed(part)
    checker.close()
    assert checker.stack == [], checker.stack
    return "".join(checker.text)


def test_markup_is_escaped_and_formatted() -> None:
    [part] = render_message(
        "**Bold** and _it_ with <script>alert(1)</script> & `a<b`\n\n"
        "## Heading\n\n1. one\n2. two\n\n[docs](https://d.example/?a=1&b=2) "
        "[evil](javascript:alert(1))"
    )
    text = check(part)
    assert "<b>Bold</b>" in part
    assert "<i>it</i>" in part
    assert "&lt;script&gt;" in part
    assert "&amp;" in part
    assert "<code>a&lt;b</code>" in part
    assert "<b>Heading</b>" in part
    assert "1. one\n2. two" in part
    assert '<a href="https://d.example/?a=1&amp;b=2">docs</a>' in part
    assert "javascript:" not in part.split("evil")[0].rsplit("docs", 1)[-1]
    assert "<script>" in text  # the customer sees the literal text


def test_citations_are_links() -> None:
    [part] = render_message(
        "Answer.",
        citations=[
            Citation(doc_id="s", title="Connect <Slack>", url="https://d.example/slack"),
            Citation(doc_id="f", title="FAQ"),
        ],
    )
    check(part)
    assert part.endswith(
        'Sources:\n• <a href="https://d.example/slack">Connect &lt;Slack&gt;</a>\n• FAQ'
    )


def test_long_answers_split_on_paragraph_boundaries() -> None:
    paragraphs = [f"**Part {i}.** " + ("word & <tag> " * 60).strip() for i in range(40)]
    parts = render_message("\n\n".join(paragraphs))
    assert len(parts) > 1
    seen: list[str] = []
    for part in parts:
        assert utf16_len(part) <= MAX_MESSAGE_CHARS
        check(part)
        chunks = part.split("\n\n")
        assert all(c.startswith("<b>Part ") for c in chunks)  # never cut inside a paragraph
        seen += chunks
    assert len(seen) == 40


def test_one_huge_block_is_cut_as_plain_text() -> None:
    code = "```\n" + "\n".join(f"line {i} <x>" for i in range(1200)) + "\n```"
    parts = render_message("intro\n\n" + code + "\n\n" + "🙂" * 3000)
    assert len(parts) >= 3
    for part in parts:
        assert utf16_len(part) <= MAX_MESSAGE_CHARS
        check(part)
    joined = "".join(check(p) for p in parts)
    assert "line 0 <x>" in joined
    assert "line 1199 <x>" in joined
    assert joined.count("🙂") == 3000  # counted as 2 UTF-16 units each, none lost
