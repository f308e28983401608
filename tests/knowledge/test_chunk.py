from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge.chunk import MAX_CHARS, Document, chunk_document, html_to_markdown
from knowledge.ingest import IngestError, read_documents, read_jsonl

GUIDE = """---
title: Connecting Slack
url: https://docs.example.com/slack
audience: admins
---
# Slack channel

Switchboard talks to Slack through the Events API.

## Create the app

Open api.slack.com and create an app from the manifest.

```sh
# this is a shell comment, not a heading
switchboard ingest docs/
```

### Scopes

Add chat:write and app_mentions:read.

## Troubleshooting

{long}
"""

PARAGRAPH = "The signing secret must match the one shown on the Basic Information page. " * 4


def test_markdown_sections_keep_heading_paths(tmp_path: Path) -> None:
    source = tmp_path / "docs" / "channels"
    source.mkdir(parents=True)
    long = "\n\n".join(f"Paragraph {i}. {PARAGRAPH}" for i in range(8))
    (source / "slack.md").write_text(GUIDE.format(long=long), encoding="utf-8")

    [doc] = list(read_documents([tmp_path / "docs"]))

    assert doc.doc_id == "channels/slack"
    assert doc.title == "Connecting Slack"  # front matter wins over the H1
    assert doc.url == "https://docs.example.com/slack"
    assert doc.metadata == {"audience": "admins"}
    chunks = chunk_document(doc)
    headings = [c.heading for c in chunks]
    assert headings[:3] == [
        "Slack channel",
        "Slack channel > Create the app",
        "Slack channel > Create the app > Scopes",
    ]
    # The shell comment inside the code block stays in its section.
    assert "# this is a shell comment" in chunks[1].text
    assert "---" not in chunks[0].text
    assert "audience" not in chunks[0].text
    # The long section is split on paragraph boundaries, within the budget.
    trouble = [c for c in chunks if c.heading == "Slack channel > Troubleshooting"]
    assert len(trouble) >= 3
    assert all(len(c.text) <= MAX_CHARS for c in trouble)
    assert all(c.text.startswith("Paragraph ") for c in trouble)
    assert "".join(c.text for c in trouble).count("Paragraph ") == 8
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert (
        chunks[1]
        .embedding_text()
        .startswith("Connecting Slack > Slack channel > Create the app\n")
    )


def test_markdown_title_and_doc_id_of_a_single_file(tmp_path: Path) -> None:
    path = tmp_path / "quickstart.markdown"
    path.write_text("Intro line.\n\n# Quick start\n\nRun make run.\n", encoding="utf-8")

    [doc] = list(read_documents([path], base_url="https://docs.example.com/"))

    assert doc.doc_id == "quickstart"
    assert doc.title == "Quick start"
    assert doc.url == "https://docs.example.com/quickstart"
    chunks = chunk_document(doc)
    assert [(c.heading, c.text) for c in chunks] == [
        ("", "Intro line."),
        ("Quick start", "Run make run."),
    ]


def test_html_keeps_headings_and_drops_scripts(tmp_path: Path) -> None:
    html = """<!doctype html><html><head><title>Human console</title>
    <style>body{color:red}</style></head><body>
    <nav><a href="/">Home</a></nav>
    <h1>The console</h1><p>Agents log in at <b>/console</b>.</p>
    <h2>Claiming</h2><ul><li>Open the queue</li><li>Press claim</li></ul>
    <script>alert("x")</script></body></html>"""
    (tmp_path / "console.html").write_text(html, encoding="utf-8")

    [doc] = list(read_documents([tmp_path]))
    chunks = chunk_document(doc)

    assert doc.doc_id == "console"
    assert doc.title == "Human console"
    assert [c.heading for c in chunks] == ["The console", "The console > Claiming"]
    assert chunks[0].text == "Agents log in at /console."
    assert "- Open the queue" in chunks[1].text
    assert "- Press claim" in chunks[1].text
    joined = " ".join(c.text for c in chunks)
    assert "alert" not in joined
    assert "color" not in joined
    assert "Home" not in joined


def test_html_title_falls_back_to_h1() -> None:
    title, text = html_to_markdown("<h1>Deploy</h1><p>Use the Helm chart.</p>")
    assert title == "Deploy"
    assert text.splitlines()[0] == "# Deploy"


def test_plain_text_splits_long_lines(tmp_path: Path) -> None:
    text = "\n".join(f"Line {i}: " + "word " * 30 for i in range(40))
    (tmp_path / "notes.txt").write_text(text, encoding="utf-8")

    [doc] = list(read_documents([tmp_path]))
    chunks = chunk_document(doc)

    assert doc.format == "text"
    assert doc.title == "notes.txt"
    assert len(chunks) > 1
    assert all(len(c.text) <= MAX_CHARS and c.heading == "" for c in chunks)
    assert all(c.text.startswith("Line ") for c in chunks)  # cut at line boundaries


def test_directory_walk_skips_hidden_and_unsupported(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nalpha\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "b.md").write_text("# B\n\nbeta\n", encoding="utf-8")

    assert [d.doc_id for d in read_documents([tmp_path])] == ["a"]
    with pytest.raises(IngestError, match="unsupported file type"):
        list(read_documents([tmp_path / "image.png"]))
    with pytest.raises(IngestError, match="no such file"):
        list(read_documents([tmp_path / "missing.md"]))


def test_galaxy_jsonl_records(galaxy: Path) -> None:
    docs = list(read_jsonl(galaxy / "kb.jsonl"))

    assert len(docs) == 451
    first = docs[0]
    assert first.doc_id == "galaxy_s10:section_0"
    assert first.title == "Features"
    assert first.url is not None
    assert first.url.startswith("https://downloadcenter.samsung.com/")
    longest = max(docs, key=lambda d: len(d.text))
    chunks = chunk_document(longest)
    assert len(chunks) >= 3
    assert all(len(c.text) <= MAX_CHARS for c in chunks)
    # Every word of the record survives chunking.
    assert " ".join(" ".join(c.text for c in chunks).split()) == " ".join(longest.text.split())


def test_jsonl_doc_id_alias_metadata_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    records = [
        {
            "doc_id": "faq-1",
            "title": "Refunds",
            "text": "Refunds take 5 days.",
            "metadata": {"k": 1},
        },
        {"id": 7, "text": "No title here."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")

    docs = list(read_jsonl(path, base_url="https://kb.example.com/"))

    assert [(d.doc_id, d.title, d.url, d.metadata) for d in docs] == [
        ("faq-1", "Refunds", "https://kb.example.com/faq-1", {"k": 1}),
        ("7", "7", "https://kb.example.com/7", {}),
    ]
    path.write_text(
        '{"id": "x", "text": "ok"}\n{"title": "no id", "text": "t"}\n', encoding="utf-8"
    )
    with pytest.raises(IngestError, match=r"kb\.jsonl:2: .*\"id\"") as info:
        list(read_jsonl(path))
    assert info.value.source.endswith("kb.jsonl:2")
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(IngestError, match="invalid JSON"):
        list(read_jsonl(path))


def test_empty_document_has_no_chunks() -> None:
    assert chunk_document(Document(doc_id="e", title="E", text="# Only a heading\n")) == []
