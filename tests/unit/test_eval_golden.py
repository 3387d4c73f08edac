"""Golden sets: the repository's QA set, digest stability, BEIR loading."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from llmops_dagster.access import Principal
from llmops_dagster.evaluate.golden import (
    DEFAULT_GOLDEN_PATH,
    GoldenSetError,
    load_beir,
    load_golden,
    load_golden_jsonl,
)
from llmops_dagster.evaluate.run import build_cases
from llmops_dagster.qa import QAItem

pytestmark = pytest.mark.unit


def test_default_golden_set_loads_with_digest() -> None:
    golden = load_golden()
    assert golden.path == DEFAULT_GOLDEN_PATH
    # 200 public questions, then 12 about the confidential sample documents (asked by hr or
    # security members); the demo's first 60 cases are all public.
    assert len(golden) == 212 and golden.has_reference_answers
    assert all(item.relevant_doc_ids for item in golden.items)
    assert all(d.startswith("fs:") for item in golden.items for d in item.relevant_doc_ids)
    assert len(golden.version) == 64 and golden.version == load_golden_jsonl().version
    frame = golden.to_dataframe()
    assert list(frame.columns) == ["id", "question", "reference_answer", "relevant_doc_ids", "type"]
    assert len(frame) == 212
    groups = [item.groups for item in golden.items]
    assert groups[:200] == [()] * 200
    assert groups[200:] == [("hr",)] * 6 + [("security",)] * 6


def test_digest_ignores_order_and_formatting_but_not_content(tmp_path: Path) -> None:
    rows = [
        json.loads(line) for line in DEFAULT_GOLDEN_PATH.read_text().splitlines() if line.strip()
    ]
    random.Random(7).shuffle(rows)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text(
        "\n\n".join(json.dumps(r, indent=None, sort_keys=False) for r in rows) + "\n"
    )
    assert load_golden(shuffled).version == load_golden().version

    rows[0]["reference_answer"] += " (edited)"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(json.dumps(r) for r in rows))
    assert load_golden(edited).version != load_golden().version


def test_subset_has_its_own_version() -> None:
    golden = load_golden()
    sub = golden.subset(5)
    assert len(sub) == 5 and sub.version != golden.version and sub.name.endswith("[:5]")


def test_malformed_and_duplicate_lines_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q"}\n{"question": "no id"}\n')
    with pytest.raises(GoldenSetError, match=r"bad\.jsonl:2: missing id"):
        load_golden(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "question": "q"}\n{"id": "a", "question": "q2"}\n')
    with pytest.raises(GoldenSetError, match=r"dup\.jsonl:2: duplicate id 'a' \(first on line 1\)"):
        load_golden(dup)


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


# --- the asker's groups -------------------------------------------------------------------------
def test_groups_are_read_validated_and_digested_only_when_present(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"id": "a", "question": "public?", "relevant_doc_ids": ["fs:a.md"]}\n'
        '{"id": "b", "question": "pay?", "relevant_doc_ids": ["fs:hr/b.md"], '
        '"groups": ["security", "hr"]}\n'
    )
    golden = load_golden(path)
    public, hr = golden.items
    assert (public.groups, hr.groups) == ((), ("hr", "security"))
    assert public.principal == Principal("golden", frozenset())
    assert hr.principal.visible_groups == ["hr", "public", "security"]
    assert "groups" not in public.to_record()  # sets without groups keep their digest
    assert hr.to_record()["groups"] == ["hr", "security"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q"}\n{"id": "b", "question": "q", "groups": "hr"}\n')
    with pytest.raises(GoldenSetError, match=r"bad\.jsonl:2: groups must be a list"):
        load_golden(bad)
    bad.write_text('{"id": "a", "question": "q", "groups": ["Human Resources"]}\n')
    with pytest.raises(GoldenSetError, match=r"bad\.jsonl:1: invalid group name"):
        load_golden(bad)


def test_build_cases_answers_each_case_as_its_own_principal() -> None:
    """One answer_fn call per principal batch (batching kept), cases back in golden order."""

    class Chunk:
        def __init__(self, who: Principal) -> None:
            self.chunk_id = self.doc_id = f"doc-for-{','.join(who.visible_groups)}"
            self.text = "text"

    class Ans:
        def __init__(self, who: Principal) -> None:
            self.text, self.total_ms, self.ranked_doc_ids = "a", 1.0, []
            self.retrieved = [Chunk(who)]

    calls: list[tuple[list[str], list[str]]] = []

    def answer_fn(questions: Sequence[str], who: Principal) -> list[Ans]:
        calls.append((list(questions), who.visible_groups))
        return [Ans(who) for _ in questions]

    def item(i: int, groups: tuple[str, ...]) -> QAItem:
        return QAItem(
            f"q{i}", f"question {i}", relevant_doc_ids=("d",), reference_answer="a", groups=groups
        )

    items = [item(1, ()), item(2, ("hr",)), item(3, ()), item(4, ("hr",)), item(5, ())]
    cases = build_cases(items, answer_fn, batch_size=2)
    assert calls == [
        (["question 1", "question 3"], ["public"]),
        (["question 5"], ["public"]),
        (["question 2", "question 4"], ["hr", "public"]),
    ]
    assert [c.case_id for c in cases] == ["q1", "q2", "q3", "q4", "q5"]
    assert [c.groups for c in cases] == [[], ["hr"], [], ["hr"], []]
    assert [c.retrieved_doc_ids for c in cases] == [
        ["doc-for-public"],
        ["doc-for-hr,public"],
        ["doc-for-public"],
        ["doc-for-hr,public"],
        ["doc-for-public"],
    ]
