from __future__ import annotations

import pyarrow as pa
import pytest

from llmops_dagster.chunks.chunk_table import active_chunks, sync_chunks
from llmops_dagster.config import Settings
from llmops_dagster.embed.model import load_tokenizer
from llmops_dagster.hashing import content_hash
from llmops_dagster.text.chunking import chunk_document
from llmops_dagster.warehouse import Warehouse

pytestmark = pytest.mark.unit

LONG = "\n\n".join(f"## Part {i}\n\n" + " ".join(["drone battery depot"] * 90) for i in range(3))


@pytest.fixture(scope="module")
def chunker():
    tokenizer = load_tokenizer(Settings().models.embedding_model)

    def chunk(doc_id: str, text: str, fmt: str):
        return chunk_document(doc_id, text, tokenizer=tokenizer, chunk_size=64, overlap=8, fmt=fmt)

    return chunk


def _docs(texts: dict[str, str]) -> pa.Table:
    ids = sorted(texts)
    return pa.table(
        {
            "doc_id": ids,
            "content_hash": [content_hash(texts[i]) for i in ids],
            "text": [texts[i] for i in ids],
            "format": ["md"] * len(ids),
        }
    )


def _status(warehouse: Warehouse, doc_id: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"active": set(), "removed": set()}
    for chunk_id, status in warehouse.execute(
        "SELECT chunk_id, status FROM llmops.chunks WHERE doc_id = ?", [doc_id]
    ).fetchall():
        out[status].add(chunk_id)
    return out


def test_only_changed_documents_are_rechunked(chunker, warehouse) -> None:
    texts = {"fs:a.md": LONG, "fs:b.md": "# B\n\nShort note about depots.", "fs:c.md": LONG + "!"}
    first = sync_chunks(warehouse, _docs(texts), chunker, fingerprint="f1")
    assert first.docs_chunked == 3 and first.chunks_removed == 0
    assert first.active_chunks == active_chunks(warehouse).num_rows == first.chunks_added
    a_before = _status(warehouse, "fs:a.md")["active"]

    again = sync_chunks(warehouse, _docs(texts), chunker, fingerprint="f1")
    assert (again.docs_chunked, again.chunks_added, again.chunks_removed) == (0, 0, 0)
    assert again.docs_unchanged == 3

    texts["fs:b.md"] = "# B\n\nShort note about depots, now with a second sentence."
    changed = sync_chunks(warehouse, _docs(texts), chunker, fingerprint="f1")
    assert changed.chunked_doc_ids == ["fs:b.md"]
    assert changed.chunks_added == 1 and changed.chunks_removed == 1
    assert _status(warehouse, "fs:a.md")["active"] == a_before
    assert len(_status(warehouse, "fs:b.md")["removed"]) == 1


def test_deleted_documents_have_their_chunks_marked_removed(chunker, warehouse) -> None:
    texts = {"fs:a.md": LONG, "fs:b.md": "# B\n\nShort."}
    sync_chunks(warehouse, _docs(texts), chunker, fingerprint="f1")
    a_chunks = _status(warehouse, "fs:a.md")["active"]
    del texts["fs:a.md"]
    report = sync_chunks(warehouse, _docs(texts), chunker, fingerprint="f1")
    assert report.removed_doc_ids == ["fs:a.md"]
    assert report.chunks_removed == len(a_chunks)
    assert _status(warehouse, "fs:a.md") == {"active": set(), "removed": a_chunks}
    # The document comes back unchanged: the same chunk ids are re-activated, not duplicated.
    texts["fs:a.md"] = LONG
    back = sync_chunks(warehouse, _docs(texts), chunker, fingerprint="f1")
    assert back.chunks_added == len(a_chunks)
    assert _status(warehouse, "fs:a.md") == {"active": a_chunks, "removed": set()}
    (total,) = warehouse.execute("SELECT count(*) FROM llmops.chunks").fetchone()
    assert total == len(a_chunks) + 1


def test_changed_chunker_settings_rechunk_everything(chunker, warehouse) -> None:
    texts = {"fs:a.md": LONG, "fs:b.md": "# B\n\nShort."}
    sync_chunks(warehouse, _docs(texts), chunker, fingerprint="f1")
    report = sync_chunks(warehouse, _docs(texts), chunker, fingerprint="f2")
    assert report.docs_chunked == 2
    # Same chunker output, so the chunk ids are kept rather than churned.
    assert report.chunks_added == 0 and report.chunks_removed == 0


def test_a_failing_document_does_not_stop_the_others(chunker, warehouse) -> None:

    def flaky(doc_id: str, text: str, fmt: str):
        if doc_id == "fs:bad.md":
            raise ValueError("tokenizer exploded")
        return chunker(doc_id, text, fmt)

    texts = {"fs:bad.md": "# x\n\ny", "fs:good.md": "# Good\n\nFine text."}
    report = sync_chunks(warehouse, _docs(texts), flaky, fingerprint="f1")
    assert report.failed == {"fs:bad.md": "ValueError: tokenizer exploded"}
    assert report.chunked_doc_ids == ["fs:good.md"]
    # Not recorded as chunked: the next run retries it.
    retry = sync_chunks(warehouse, _docs(texts), chunker, fingerprint="f1")
    assert retry.chunked_doc_ids == ["fs:bad.md"]
