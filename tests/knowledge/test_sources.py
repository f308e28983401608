"""PDF and DOCX files: extraction with headings, ingest, search and citations."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from knowledge import KnowledgeBase
from knowledge.chunk import chunk_document
from knowledge.extract import docx_to_markdown, pdf_to_markdown
from knowledge.ingest import IngestError, read_documents
from tests.knowledge.documents import make_docx, make_pdf
from tests.knowledge.embedders import CountingEmbedder

PRINTER_PAGES = [
    ["Printer guide", "Thank you for choosing the LaserJet 100 office printer."],
    [
        "Paper jams",
        "Open the rear door (panel B) and pull the jammed sheet out slowly.",
        "Wi-Fi setup",
        "Hold the WPS button for three seconds, then press WPS on your router.",
    ],
    ["Toner", "Replace the toner cartridge when the orange light blinks twice."],
]
PRINTER_OUTLINE = [
    ("Printer guide", 0, 1),
    ("Paper jams", 1, 2),
    ("Wi-Fi setup", 1, 2),
    ("Toner", 2, 2),
]


def test_pdf_outline_becomes_headings_and_chunks_keep_the_path() -> None:
    title, text = pdf_to_markdown(
        make_pdf(PRINTER_PAGES, outline=PRINTER_OUTLINE, title="LaserJet 100 manual")
    )

    assert title == "LaserJet 100 manual"
    assert "## Wi-Fi setup\n\nHold the WPS button" in text
    assert "(panel B)" in text
    from knowledge.chunk import Document

    chunks = chunk_document(Document("printer", title, text))
    headings = [c.heading for c in chunks]
    assert headings == [
        "Printer guide",
        "Printer guide > Paper jams",
        "Printer guide > Wi-Fi setup",
        "Printer guide > Toner",
    ]
    assert chunks[2].text.startswith("Hold the WPS button")


def test_pdf_without_outline_is_plain_text_per_page() -> None:
    title, text = pdf_to_markdown(make_pdf([["First page line."], ["Second page line."]]))

    assert title is None
    assert text == "First page line.\n\nSecond page line."


def test_docx_heading_styles_lists_and_tables() -> None:
    data = make_docx(
        [
            ("Title", "Returns policy"),
            ("Heading 1", "Refunds"),
            ("Normal", "We refund purchases within 14 days."),
            ("List Bullet", "Keep the receipt"),
            ("Heading 2", "Exchanges"),
            ("table", "Item|Days;Shoes|30"),
        ]
    )

    title, text = docx_to_markdown(data)

    assert title == "Returns policy"
    assert "# Refunds\n\nWe refund purchases within 14 days.\n\n- Keep the receipt" in text
    assert "## Exchanges\n\nItem | Days\nShoes | 30" in text


def test_a_corrupt_pdf_or_docx_names_the_file(tmp_path: Path) -> None:
    for name in ("broken.pdf", "broken.docx"):
        path = tmp_path / name
        path.write_bytes(b"this is not the format its name says")
        with pytest.raises(IngestError, match=name):
            list(read_documents([path]))


async def test_pdf_and_docx_files_are_ingested_searched_and_cited(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "printer.pdf").write_bytes(
        make_pdf(PRINTER_PAGES, outline=PRINTER_OUTLINE, title="LaserJet 100 manual")
    )
    (folder / "returns.docx").write_bytes(
        make_docx(
            [
                ("Heading 1", "Refunds"),
                ("Normal", "We refund purchases within 14 days when you keep the receipt."),
                ("Heading 1", "Exchanges"),
                ("Normal", "Shoes can be exchanged for another size within 30 days."),
            ],
            title="Returns policy",
        )
    )
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        report = await kb.ingest([folder], base_url="https://help.example.com/files/")
        assert report.documents_added == 2
        assert report.chunks_written == 6

        jam = (await kb.search("paper is stuck in my printer", top_k=1))[0]
        assert (jam.doc_id, jam.title) == ("printer", "LaserJet 100 manual")
        assert jam.heading == "Printer guide > Paper jams"
        assert jam.url == "https://help.example.com/files/printer"
        swap = (await kb.search("can I swap shoes for a bigger size?", top_k=1))[0]
        assert (swap.doc_id, swap.heading) == ("returns", "Exchanges")

        again = await kb.ingest([folder], base_url="https://help.example.com/files/")
        assert again.documents_unchanged == 2
    finally:
        await kb.close()
