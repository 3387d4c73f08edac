"""llmops_dagster.qa: one QA item type, one loader (errors name file:line) and one digest rule,
shared by the golden set, the training set, the review step and the training-set sensor."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from llmops_dagster.evaluate.golden import DEFAULT_GOLDEN_PATH, load_golden
from llmops_dagster.qa import (
    QAFileError,
    QAItem,
    canonical_jsonl,
    load_qa_jsonl,
    qa_digest,
    qa_file_digest,
)

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, *rows: Any, name: str = "qa.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
        encoding="utf-8",
    )
    return path


def test_the_digest_is_the_documented_canonical_rendering() -> None:
    """Recomputed by hand from the raw lines, with the rule the module docstring states (the
    golden set's version before the loaders were merged): evaluations logged with it stay
    comparable."""
    rows = [json.loads(line) for line in DEFAULT_GOLDEN_PATH.read_text().splitlines() if line]
    records = []
    for row in sorted(rows, key=lambda r: r["id"]):
        record = {k: row.get(k) for k in ("id", "question", "reference_answer", "type")}
        record["relevant_doc_ids"] = row.get("relevant_doc_ids") or []
        if row.get("groups"):
            record["groups"] = sorted(row["groups"])
        line = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        records.append(line)
    expected = hashlib.sha256(("\n".join(records) + "\n").encode()).hexdigest()
    assert qa_file_digest(DEFAULT_GOLDEN_PATH) == load_golden().version == expected


def test_every_field_is_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "id": 7,
            "question": "Pay band?",
            "reference_answer": "P4",
            "relevant_doc_ids": ["fs:hr/bands.md"],
            "type": "numeric",
            "groups": ["security", "hr", "public", "hr"],
            "relevance_grades": {"fs:hr/bands.md": 2},
            "source_trace_id": "tr-1",
        },
        {"id": "b", "question": "Retrieval only?"},
    )
    first, second = load_qa_jsonl(path)
    assert first == QAItem(
        "7",
        "Pay band?",
        reference_answer="P4",
        relevant_doc_ids=("fs:hr/bands.md",),
        type="numeric",
        groups=("hr", "security"),  # sorted, once each, public dropped
        relevance_grades={"fs:hr/bands.md": 2},
        extra={"source_trace_id": "tr-1"},
    )
    assert second == QAItem("b", "Retrieval only?")
    assert second.reference_answer is None and second.principal.visible_groups == ["public"]


def test_a_line_round_trips_through_to_line(tmp_path: Path) -> None:
    item = QAItem(
        "fb-1",
        "q?",
        reference_answer="a",
        relevant_doc_ids=("d",),
        type="feedback",
        groups=("hr",),
        extra={"source_trace_id": "tr-1"},
    )
    assert load_qa_jsonl(_write(tmp_path, item.to_line())) == [item]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"qa\.jsonl:2: not JSON"),
        ('["a list"]', r"qa\.jsonl:2: expected a JSON object, got list"),
        ('{"question": "no id"}', r"qa\.jsonl:2: missing id$"),
        ('{"id": "b", "question": ""}', r"qa\.jsonl:2: missing question$"),
        ('{"id": "b", "question": 3}', r"qa\.jsonl:2: question must be a string, got 3"),
        ('{"id": "b", "question": "q", "reference_answer": 4}', r"reference_answer must be a str"),
        ('{"id": "b", "question": "q", "relevant_doc_ids": "d"}', r"relevant_doc_ids must be a "),
        ('{"id": "b", "question": "q", "groups": "hr"}', r"qa\.jsonl:2: groups must be a list"),
        ('{"id": "b", "question": "q", "groups": ["HR team"]}', r"2: invalid group name 'HR t"),
        ('{"id": "b", "question": "q", "relevance_grades": {"d": "2"}}', r"relevance_grades must"),
        ('{"id": "a", "question": "again"}', r"qa\.jsonl:2: duplicate id 'a' \(first on line 1\)"),
    ],
)
def test_a_bad_line_names_the_file_the_line_and_the_problem(
    tmp_path: Path, line: str, message: str
) -> None:
    path = _write(tmp_path, {"id": "a", "question": "fine"}, line)
    with pytest.raises(QAFileError, match=message):
        load_qa_jsonl(path)


def test_reference_answers_are_required_only_when_asked_for(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"id": "a", "question": "q", "reference_answer": "r"},
        "",
        {"id": "b", "question": "q"},
    )
    assert [i.id for i in load_qa_jsonl(path)] == ["a", "b"]  # blank lines are skipped
    with pytest.raises(QAFileError, match=r"qa\.jsonl:3: missing reference_answer"):
        load_qa_jsonl(path, require_reference_answer=True)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(QAFileError, match=r"QA file .*nope\.jsonl does not exist"):
        load_qa_jsonl(tmp_path / "nope.jsonl")
    assert load_qa_jsonl(_write(tmp_path, "")) == []
    assert canonical_jsonl([]) == "" and len(qa_digest([])) == 64


def test_the_digest_ignores_order_formatting_and_extra_keys_but_not_content(
    tmp_path: Path,
) -> None:
    rows = [
        {"id": "b", "question": "q2", "reference_answer": "r2", "groups": ["hr"]},
        {"id": "a", "question": "q1", "reference_answer": "r1"},
    ]
    base = qa_file_digest(_write(tmp_path, *rows, name="base.jsonl"))
    reordered = _write(
        tmp_path, json.dumps(rows[1], indent=None), "", json.dumps(rows[0]), name="re.jsonl"
    )
    with_extra = _write(tmp_path, {**rows[0], "source_trace_id": "tr-9"}, rows[1], name="x.jsonl")
    public_listed = _write(
        tmp_path, rows[0], {**rows[1], "groups": ["public"]}, name="public.jsonl"
    )
    assert qa_file_digest(reordered) == qa_file_digest(with_extra) == base
    assert qa_file_digest(public_listed) == base  # "public" adds nothing to an audience
    for changed in (
        {**rows[0], "reference_answer": "r2 (edited)"},
        {**rows[0], "groups": ["security"]},
        {**rows[0], "type": "numeric"},
        {**rows[0], "relevant_doc_ids": ["d"]},
    ):
        assert qa_file_digest(_write(tmp_path, changed, rows[1], name="c.jsonl")) != base
