"""Raw rows → Document/Rejected rows: stable ids, reasons, transform hook, never raising."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from llmops_dagster.documents.normalize import normalize_file_rows, normalize_record_rows
from llmops_dagster.documents.rows import make_doc_id
from llmops_dagster.hashing import content_hash
from llmops_dagster.sources.source_config import RecordMapping

pytestmark = pytest.mark.unit

MODIFIED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def fs_row(path: str, content: bytes | None, **extra: object) -> dict[str, object]:
    return {
        "relative_path": path,
        "file_url": f"file:///data/{path}",
        "modification_date": MODIFIED,
        "size_in_bytes": None if content is None else len(content),
        "too_large": False,
        "content": content,
        **extra,
    }


def test_file_document_fields_follow_the_contract() -> None:
    batch = normalize_file_rows([fs_row("guides/a.md", b"# Alpha\n\nBody text.")])
    (doc,) = batch.documents
    assert doc.doc_id == "fs:guides/a.md"
    assert (doc.source, doc.natural_key, doc.title, doc.format) == (
        "fs",
        "guides/a.md",
        "Alpha",
        "md",
    )
    assert doc.uri == "file:///data/guides/a.md"
    assert doc.updated_at == MODIFIED
    assert doc.content_hash == content_hash(doc.text)
    assert json.loads(doc.metadata)["path"] == "guides/a.md"
    assert batch.files == {("fs", "guides/a.md")}
    assert batch.rejected == []


def test_doc_ids_are_stable_across_runs_and_independent_of_content() -> None:
    first = normalize_file_rows([fs_row("a.md", b"v1")]).documents[0]
    second = normalize_file_rows([fs_row("a.md", b"v2 changed")]).documents[0]
    assert first.doc_id == second.doc_id == make_doc_id("fs", "a.md")
    assert first.content_hash != second.content_hash


def test_bad_files_are_rejected_with_reasons_and_good_ones_survive() -> None:
    rows = [
        fs_row("good.md", b"# ok\nfine"),
        fs_row("big.pdf", None, too_large=True, size_in_bytes=11_000_000),
        fs_row("bin.txt", b"\x00\x01\x02"),
        fs_row("empty.md", b""),
        fs_row("latin.txt", b"caf\xe9"),
        fs_row("x.exe", b"MZ"),
        {**fs_row("weird.md", None), "content": object()},  # not bytes: must not raise
    ]
    batch = normalize_file_rows(rows, source="docs")
    assert [d.doc_id for d in batch.documents] == ["docs:good.md"]
    reasons = {r.natural_key: r.reason for r in batch.rejected}
    assert reasons == {
        "big.pdf": "too_large",
        "bin.txt": "binary",
        "empty.md": "empty",
        "latin.txt": "undecodable",
        "x.exe": "unsupported_format",
        "weird.md": "parse_error",
    }
    assert batch.rejected_by_reason()["too_large"] == 1
    big = next(r for r in batch.rejected if r.natural_key == "big.pdf")
    assert big.doc_id == "docs:big.pdf" and "11000000" in big.detail


def test_json_export_records_get_path_hash_id_keys() -> None:
    data = json.dumps([{"id": 1, "title": "A", "body": "aa"}, {"id": 2, "title": "B"}]).encode()
    batch = normalize_file_rows([fs_row("export/faq.json", data)])
    assert [d.natural_key for d in batch.documents] == ["export/faq.json#1", "export/faq.json#2"]
    assert batch.documents[0].uri == "file:///data/export/faq.json#1"
    assert all(json.loads(d.metadata)["path"] == "export/faq.json" for d in batch.documents)


def test_duplicate_record_ids_reject_the_later_one() -> None:
    data = b'[{"id": 1, "body": "first"}, {"id": 1, "body": "second"}]'
    batch = normalize_file_rows([fs_row("d.json", data)])
    assert [d.text for d in batch.documents] == ["body: first"]
    assert [(r.natural_key, r.reason) for r in batch.rejected] == [("d.json#1", "parse_error")]


def test_transform_hook_is_applied_before_hashing() -> None:
    batch = normalize_file_rows([fs_row("a.txt", b"Mail bob@example.com now")], transform=str.upper)
    (doc,) = batch.documents
    assert doc.text == "MAIL BOB@EXAMPLE.COM NOW"
    assert doc.content_hash == content_hash("MAIL BOB@EXAMPLE.COM NOW")


def test_transform_that_empties_or_raises_rejects_instead_of_crashing() -> None:
    def boom(text: str) -> str:
        raise RuntimeError("bug in cleaner")

    emptied = normalize_file_rows([fs_row("a.txt", b"only noise")], transform=lambda t: "  ")
    assert [r.reason for r in emptied.rejected] == ["empty"]
    crashed = normalize_file_rows([fs_row("a.txt", b"text")], transform=boom)
    assert [r.reason for r in crashed.rejected] == ["parse_error"]
    assert "bug in cleaner" in crashed.rejected[0].detail


def test_record_rows_from_api_or_sql() -> None:
    rows = [
        {
            "id": 10,
            "title": "Reset password",
            "body": "Click forgot.",
            "updated_at": datetime(2026, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=2))),
            "_dlt_id": "x",
            "_dlt_load_id": "1",
        },
        {"id": 11, "title": "No body", "body": None, "updated_at": "2026-01-05T00:00:00Z"},
        {"title": "missing id"},
    ]
    mapping = RecordMapping(title_field="title", text_fields=["title", "body"])
    batch = normalize_record_rows(
        rows, source="sql", collection="articles", mapping=mapping, uri_prefix="db/articles"
    )
    first, second = batch.documents
    assert first.doc_id == "sql:articles#10"
    assert (first.title, first.text, first.format) == (
        "Reset password",
        "Reset password\n\nClick forgot.",
        "record",
    )
    assert first.uri == "db/articles#10"
    assert first.updated_at == datetime(2026, 1, 2, 1, 4, tzinfo=UTC)
    assert second.updated_at == datetime(2026, 1, 5, tzinfo=UTC)
    assert second.text == "No body"
    assert [r.reason for r in batch.rejected] == ["parse_error"]
    assert "_dlt" not in first.metadata


def test_record_uri_template() -> None:
    mapping = RecordMapping(uri_template="https://kb.example.com/a/{id}?lang={lang}")
    batch = normalize_record_rows(
        [{"id": 5, "lang": "en", "body": "x"}], source="api", collection="a", mapping=mapping
    )
    assert batch.documents[0].uri == "https://kb.example.com/a/5?lang=en"


def test_record_default_text_renders_all_fields() -> None:
    batch = normalize_record_rows(
        [{"id": 1, "name": "Ada", "role": "eng", "meta": {"k": 1}}], source="api", collection="u"
    )
    (doc,) = batch.documents
    assert doc.title == "Ada"
    assert doc.text == 'name: Ada\nrole: eng\nmeta: {"k": 1}'


# --- audiences ----------------------------------------------------------------------------------
def test_file_audience_comes_from_the_resolver_and_covers_every_record_of_an_export() -> None:
    export = json.dumps([{"id": "r1", "body": "one"}, {"id": "r2", "body": "two"}]).encode()

    def audience(path: str) -> list[str]:
        return ["hr"] if path.startswith("hr/") else ["public"]

    batch = normalize_file_rows(
        [
            fs_row("hr/pay.md", b"# Pay\n\nBands."),
            fs_row("hr/x.json", export),
            fs_row("a.md", b"A"),
        ],
        audience=audience,
    )
    assert {d.doc_id: d.allowed_groups for d in batch.documents} == {
        "fs:hr/pay.md": ("hr",),
        "fs:hr/x.json#r1": ("hr",),
        "fs:hr/x.json#r2": ("hr",),
        "fs:a.md": ("public",),
    }
    # Without a resolver every document is public; the audience is not in the text hash.
    plain = normalize_file_rows([fs_row("hr/pay.md", b"# Pay\n\nBands.")])
    assert plain.documents[0].allowed_groups == ("public",)
    assert plain.documents[0].content_hash == batch.documents[0].content_hash


def test_record_audience_from_a_field_list_csv_or_json_and_missing_is_public() -> None:
    mapping = RecordMapping(audience_field="acl", updated_at_field=None)
    rows = [
        {"id": 1, "body": "list", "acl": ["security", "HR"]},
        {"id": 2, "body": "csv", "acl": "finance, hr"},
        {"id": 3, "body": "json", "acl": '["hr"]'},
        {"id": 4, "body": "missing"},
        {"id": 5, "body": "empty", "acl": ""},
    ]
    batch = normalize_record_rows(rows, source="sql", collection="t", mapping=mapping)
    assert {d.natural_key: d.allowed_groups for d in batch.documents} == {
        "t#1": ("hr", "security"),
        "t#2": ("finance", "hr"),
        "t#3": ("hr",),
        "t#4": ("public",),
        "t#5": ("public",),
    }
    # The group list is access metadata, not searchable content.
    assert batch.documents[0].text == "body: list"


def test_record_with_an_unreadable_audience_is_rejected_never_published() -> None:
    mapping = RecordMapping(audience_field="acl", updated_at_field=None)
    rows = [
        {"id": 1, "body": "bad name", "acl": "hr, Top Secret"},
        {"id": 2, "body": "bad type", "acl": 7},
        {"id": 3, "body": "bad json", "acl": "[hr"},
        {"id": 4, "body": "fine", "acl": "hr"},
    ]
    batch = normalize_record_rows(rows, source="api", collection="kb", mapping=mapping)
    assert [d.natural_key for d in batch.documents] == ["kb#4"]
    details = {r.natural_key: (r.reason, r.detail) for r in batch.rejected}
    assert details["kb#1"] == (
        "parse_error",
        "invalid audience in field 'acl': invalid group name 'top secret': use lower-case "
        "letters, digits and _ . : - (at most 64 characters, starting with a letter or digit)",
    )
    assert details["kb#2"] == (
        "parse_error",
        "invalid audience in field 'acl': expected a list or a comma-separated string, got 7",
    )
    assert details["kb#3"] == (
        "parse_error",
        "invalid audience in field 'acl': not a JSON list: '[hr'",
    )
