"""Markdown rendering: formatting survives, nothing that runs does."""

from __future__ import annotations

from bot.desk.markdown import render_markdown


def test_formatting_lists_and_links_render() -> None:
    html = render_markdown(
        "**Connect Slack**:\n\n- open https://api.slack.com/apps.\n- [guide](https://d.example/x)"
    )
    assert "<strong>Connect Slack</strong>" in html
    assert html.count("<li>") == 2
    assert '<a href="https://api.slack.com/apps" target="_blank" rel="noopener noreferrer"' in html
    assert '<a href="https://d.example/x"' in html


def test_html_and_script_urls_are_inert() -> None:
    attacks = (
        "<img src=x onerror=alert(1)> <script>alert(2)</script> [x](javascript:alert(3)) "
        "[y](JaVaScRiPt:alert(4)) [z](data:text/html;base64,PHNjcmlwdD4=) "
        '<a href="javascript:alert(5)">a</a> ![i](https://x.example/i.png "t")'
    )
    html = render_markdown(attacks)
    assert "<img" not in html
    assert "<script" not in html
    assert '<a href="javascript' not in html.lower()
    assert 'href="data:' not in html
    assert "onerror" not in html.replace("&lt;img src=x onerror=alert(1)&gt;", "")
