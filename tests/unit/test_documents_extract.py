"""Bytes → text per format, and every rejection reason from the contract."""

from __future__ import annotations

import json

import pytest

from llmops_dagster.documents.extract import (
    ExtractionError,
    detect_format,
    extract_file,
    html_to_text,
    sniff_binary,
)
from llmops_dagster.documents.rows import RejectReason
from llmops_dagster.sources.source_config import RecordMapping
from tests.unit.doc_fixtures import BROKEN_PDF, make_pdf

pytestmark = pytest.mark.unit


def _reason(data: bytes, path: str) -> RejectReason:
    with pytest.raises(ExtractionError) as info:
        extract_file(data, path)
    return info.value.reason


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("a.md", "md"),
        ("dir/b.MARKDOWN", "md"),
        ("c.txt", "txt"),
        ("d.html", "html"),
        ("e.HTM", "html"),
        ("f.pdf", "pdf"),
        ("g.json", "json"),
        ("h.csv", "csv"),
        ("i.docx", None),
        ("noext", None),
    ],
)
def test_detect_format(path: str, fmt: str | None) -> None:
    assert detect_format(path) == fmt


def test_markdown_title_is_first_heading_and_text_kept() -> None:
    data = b"intro line\n\n# Guide to Setup\n\nSome *text*.\n"
    (doc,) = extract_file(data, "docs/guide.md")
    assert doc.title == "Guide to Setup"
    assert doc.format == "md"
    assert doc.text.startswith("intro line") and "# Guide to Setup" in doc.text


def test_markdown_without_heading_uses_file_stem_and_strips_bom() -> None:
    (doc,) = extract_file("\ufeffplain notes".encode(), "notes/todo-list.md")
    assert doc.title == "todo-list"
    assert doc.text == "plain notes"


def test_txt_keeps_text() -> None:
    (doc,) = extract_file(b"line one\r\nline two\r\n", "a/readme.txt")
    assert (doc.title, doc.text, doc.format) == ("readme", "line one\nline two", "txt")


def test_html_headings_become_markdown_and_chrome_is_dropped() -> None:
    html = b"""<!doctype html><html><head><title> Install   Guide </title>
    <style>.x{color:red}</style><script>track()</script></head><body>
    <nav><a href="/">Home</a> | <a href="/about">About</a></nav>
    <h1>Install</h1><p>Run the <code>setup</code> command.</p>
    <h2>Linux</h2><ul><li>apt</li><li>dnf</li></ul>
    <footer>Copyright 2026</footer></body></html>"""
    (doc,) = extract_file(html, "site/install.html")
    assert doc.title == "Install Guide"
    assert doc.format == "html"
    assert doc.text.splitlines()[0] == "# Install"
    assert "## Linux" in doc.text
    assert "Run the setup command." in doc.text
    assert "- apt\n- dnf" in doc.text
    for dropped in ("Home", "About", "Copyright", "track()", "color:red"):
        assert dropped not in doc.text


def test_broken_but_parseable_html_still_extracts() -> None:
    html = b"<html><body><h1>Title <b>bold</h1><p>para one<p>para two <a href=x>link<table><td>a"
    title, text = html_to_text(html.decode())
    assert title == "Title bold"
    assert "para one" in text and "para two link" in text and "a" in text


def test_html_without_title_uses_first_heading() -> None:
    (doc,) = extract_file(b"<h2>Only heading</h2><p>body</p>", "x.htm")
    assert doc.title == "Only heading"


def test_html_declared_charset_is_honoured() -> None:
    (doc,) = extract_file(b'<meta charset="latin-1"><p>caf\xe9</p>', "x.html")
    assert doc.text == "café"


def test_html_unrecoverable_markup_is_broken_html() -> None:
    data = b'<html><body><div class="never closed and all the text is in here'
    assert _reason(data, "bad.html") is RejectReason.BROKEN_HTML


def test_html_with_only_scripts_is_empty() -> None:
    assert _reason(b"<html><script>x()</script></html>", "s.html") is RejectReason.EMPTY


def test_pdf_text_and_metadata_title() -> None:
    (doc,) = extract_file(make_pdf(["Hello PDF", "line (two)"], title="Manual"), "m.pdf")
    assert (doc.title, doc.format, doc.metadata["pages"]) == ("Manual", "pdf", 1)
    assert doc.text == "Hello PDF\nline (two)"


def test_pdf_without_title_uses_stem() -> None:
    (doc,) = extract_file(make_pdf(["x"]), "dir/report-2026.pdf")
    assert doc.title == "report-2026"


@pytest.mark.parametrize(
    "data",
    [BROKEN_PDF, make_pdf(["truncated half"])[:200], b"this is not a pdf at all"],
    ids=["garbage", "truncated", "no-header"],
)
def test_broken_pdf(data: bytes) -> None:
    assert _reason(data, "x.pdf") is RejectReason.BROKEN_PDF


def test_pdf_without_text_layer_is_empty() -> None:
    assert _reason(make_pdf([]), "scan.pdf") is RejectReason.EMPTY


def test_json_array_gives_one_record_per_element_keyed_by_id() -> None:
    records = [
        {"id": 7, "title": "Seven", "body": "text seven"},
        {"id": "x-1", "name": "Named", "body": "text x", "tags": ["a", "b"]},
        {"body": "no id"},
    ]
    docs = extract_file(json.dumps(records).encode(), "export/items.json")
    assert [d.key_suffix for d in docs] == ["#7", "#x-1", "#3"]
    assert [d.title for d in docs] == ["Seven", "Named", "3"]
    assert "body: text x" in docs[1].text and 'tags: ["a", "b"]' in docs[1].text
    assert all(d.format == "json" for d in docs)


def test_json_object_is_one_document() -> None:
    (doc,) = extract_file(b'{"title": "Cfg", "value": 3}', "c.json")
    assert (doc.key_suffix, doc.title) == ("", "Cfg")
    assert "value: 3" in doc.text


def test_json_text_fields_mapping() -> None:
    mapping = RecordMapping(id_field="sku", title_field="label", text_fields=["label", "desc"])
    data = b'[{"sku": "A1", "label": "Lamp", "desc": "Bright.", "price": 3}]'
    (doc,) = extract_file(data, "p.json", mapping)
    assert (doc.key_suffix, doc.title, doc.text) == ("#A1", "Lamp", "Lamp\n\nBright.")


def test_csv_rows_are_records() -> None:
    data = b'id,title,body\n1,First,hello\n2,Second,"with, comma"\n'
    docs = extract_file(data, "t.csv")
    assert [(d.key_suffix, d.title) for d in docs] == [("#1", "First"), ("#2", "Second")]
    assert "body: with, comma" in docs[1].text
    assert all(d.format == "csv" for d in docs)


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (b"", "e.md", RejectReason.EMPTY),
        (b"  \n\t \n", "w.txt", RejectReason.EMPTY),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.md", RejectReason.BINARY),
        (b"text\x00with nul", "n.txt", RejectReason.BINARY),
        (bytes(range(1, 9)) * 50, "ctl.txt", RejectReason.BINARY),
        (b"caf\xe9 au lait", "latin1.md", RejectReason.UNDECODABLE),
        (b"\xff\xfe\xfd broken", "bad.csv", RejectReason.UNDECODABLE),
        (b"{not json", "x.json", RejectReason.PARSE_ERROR),
        (b"[]", "x.json", RejectReason.EMPTY),
        (b"42", "x.json", RejectReason.EMPTY),
        (b"id,title\n", "h.csv", RejectReason.EMPTY),
        (b'id,title\n1,"unterminated\n', "q.csv", RejectReason.PARSE_ERROR),
        (b"PK\x03\x04", "doc.docx", RejectReason.UNSUPPORTED_FORMAT),
        (b"hello", "Makefile", RejectReason.UNSUPPORTED_FORMAT),
    ],
)
def test_rejection_reasons(data: bytes, path: str, reason: RejectReason) -> None:
    assert _reason(data, path) is reason


def test_sniff_binary_accepts_normal_text_with_tabs_and_escapes() -> None:
    assert not sniff_binary(b"col\tcol\r\n\x1b[1mbold\x1b[0m\n" * 20)
    assert sniff_binary(b"abc\x00def")
