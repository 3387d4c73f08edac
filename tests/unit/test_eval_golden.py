"""Golden sets: the repository's QA set, digest stability, BEIR loading."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmops_dagster.evaluate.golden import (
    DEFAULT_GOLDEN_PATH,
    GoldenSetError,
    load_beir,
    load_golden,
    load_qa_jsonl,
)

pytestmark = pytest.mark.unit


def test_default_golden_set_loads_with_digest() -> None:
    golden = load_golden()
    assert golden.path == DEFAULT_GOLDEN_PATH
    assert len(golden) == 200 and golden.has_reference_answers
    assert all(item.relevant_doc_ids for item in golden.items)
    assert all(d.startswith("fs:") for item in golden.items for d in item.relevant_doc_ids)
    assert len(golden.version) == 64 and golden.version == load_qa_jsonl().version
    frame = golden.to_dataframe()
    assert list(frame.columns) == ["id", "question", "reference_answer", "relevant_doc_ids", "type"]
    assert len(frame) == 200


def test_digest_ignores_order_and_formatting_but_not_content(tmp_path: Path) -> None:
    rows = [
        json.loads(line) for line in DEFAULT_GOLDEN_PATH.read_text().splitlines() if line.strip()
    ]
    random.Random(7).shuffle(rows)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text(
        "\n\n".join(json.dumps(r, indent=None, sort_keys=False) for r in rows) + "\n"
    )
    assert load_qa_jsonl(shuffled).version == load_golden().version

    rows[0]["reference_answer"] += " (edited)"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(json.dumps(r) for r in rows))
    assert load_qa_jsonl(edited).version != load_golden().version


def test_subset_has_its_own_version() -> None:
    golden = load_golden()
    sub = golden.subset(5)
    assert len(sub) == 5 and sub.version != golden.version and sub.name.endswith("[:5]")


def test_malformed_and_duplicate_lines_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q"}\n{"question": "no id"}\n')
    with pytest.raises(GoldenSetError, match=r"bad.jsonl:2"):
        load_qa_jsonl(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "question": "q"}\n{"id": "a", "question": "q2"}\n')
    with pytest.raises(GoldenSetError, match="duplicate"):
        load_qa_jsonl(dup)


def test_beir_folder(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "first?"}\n'
        '{"_id": "q2", "text": "second?"}\n'
        '{"_id": "q3", "text": "none?"}\n'
    )
    (tmp_path / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td3\t1\nq3\td4\t0\n"
    )
    golden = load_golden(tmp_path, doc_id_prefix="beir:")
    assert golden.format == "beir" and [i.id for i in golden.items] == ["q1", "q2"]
    first = golden.items[0]
    assert first.relevant_doc_ids == ("beir:d1", "beir:d2")
    assert dict(first.relevance_grades) == {"beir:d1": 1, "beir:d2": 2}
    assert first.reference_answer is None and not golden.has_reference_answers
    assert load_beir(tmp_path, doc_id_prefix="beir:").version == golden.version
    with pytest.raises(GoldenSetError, match="missing"):
        load_beir(tmp_path, split="dev")
