"""Pure parts of benchmarks/golden_bootstrap.py: SciFact → the file source's Markdown files, the
subset, the scripted review rule, the retrieval figures (the script is imported from its path;
nothing starts)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "golden_bootstrap.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("golden_bootstrap_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve through sys.modules
    spec.loader.exec_module(module)
    return module


def test_an_abstract_becomes_a_markdown_file_whose_title_is_the_heading(
    bench: ModuleType, tmp_path: Path
) -> None:
    abstract = bench.Abstract(
        "4983", " Microstructural  development\n", "First  sentence.\nSecond."
    )
    assert bench.source_file(abstract) == (
        "scifact/4983.md",
        "# Microstructural development\n\nFirst sentence. Second.\n",
    )
    assert bench.index_doc_id("4983") == "fs:scifact/4983.md"
    assert bench.write_corpus([abstract, bench.Abstract("7", "", "Text.")], tmp_path) == 2
    assert (tmp_path / "scifact" / "7.md").read_text() == "# 7\n\nText.\n"  # no title: the id


def test_claims_keep_their_relevant_abstracts_and_the_subset_is_half_cited(
    bench: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "1", "text": "claim one"}\n{"_id": "2", "text": "unjudged"}\n'
        '{"_id": "3", "text": "claim three"}\n'
    )
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\ta\t1\n1\tb\t1\n3\tc\t1\n")
    claims = bench.read_claims(tmp_path / "queries.jsonl", tmp_path / "qrels.tsv")
    assert claims == [
        bench.Claim("1", "claim one", ("a", "b")),
        bench.Claim("3", "claim three", ("c",)),
    ]
    corpus = [bench.Abstract(i, i, i) for i in ("a", "b", "c", "x", "y", "z")]
    subset = bench.choose_subset(corpus, claims, 4, seed=13)
    ids = [a.doc_id for a in subset]
    assert len(ids) == 4 and ids == sorted(ids, key="abcxyz".index)  # corpus order
    assert len(set(ids) & {"a", "b", "c"}) == 2 and len(set(ids) & {"x", "y", "z"}) == 2
    assert bench.choose_subset(corpus, claims, 4, seed=13) == subset  # seeded


ABSTRACTS = {
    "fs:scifact/1.md": "Aspirin and bleeding. "
    "Aspirin raised the bleeding risk by 30 % in the trial.",
}


def candidate(question: str, answer: str, doc: str = "fs:scifact/1.md") -> dict:
    return {"id": "gd-1", "question": question, "reference_answer": answer,
            "relevant_doc_ids": [doc]}  # fmt: skip


def test_the_review_accepts_a_specific_question_whose_answer_is_in_the_cited_abstract(
    bench: ModuleType,
) -> None:
    found = candidate("Aspirin raised the bleeding risk by how much in the trial?",
                      "Aspirin raised the bleeding  risk by 30 % in the trial.")  # fmt: skip
    assert bench.review_rule(found, ABSTRACTS) == (
        True,
        "answer found in the cited abstract; specific question",
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (candidate("What does Aspirin and bleeding say about aspirin raised bleeding risk?",
                   "Aspirin raised the bleeding risk by 30 % in the trial."),
         "question is the generic template stub"),
        (candidate("Aspirin raised the risk by how much?", "Aspirin raised the [REDACTED] risk."),
         "reference answer is not a sentence of the cited abstract"),
        (candidate("Aspirin raised the risk by how much?", "Aspirin raised the bleeding risk",
                   doc="fs:handbook/x.md"),
         "cites no SciFact abstract of the subset"),
    ],
)  # fmt: skip
def test_the_review_rejects_stubs_changed_answers_and_foreign_documents(
    bench: ModuleType, row: dict, reason: str
) -> None:
    assert bench.review_rule(row, ABSTRACTS) == (False, reason)


def test_retrieval_figures_count_the_first_relevant_document_in_the_top_ten(
    bench: ModuleType,
) -> None:
    ranked = [["a", "b"], ["x", "y", "c"], [f"n{i}" for i in range(10)] + ["d"], []]
    relevant = [{"a"}, {"c", "y"}, {"d"}, {"e"}]
    assert bench.rank_metrics(ranked, relevant) == {
        "queries": 4,
        "hit_at_1": 0.25,
        "hit_at_5": 0.5,
        "hit_at_10": 0.5,
        "mrr_at_10": round((1 + 1 / 2) / 4, 4),
    }
    with pytest.raises(ValueError, match="one ranking per query"):
        bench.rank_metrics([["a"]], [])


def test_documents_are_ranked_by_their_best_chunk(bench: ModuleType) -> None:
    from tests.support.stubs import hit

    hits = [hit("c1", "d2", "t"), hit("c2", "d1", "t"), hit("c3", "d2", "t")]
    assert bench.doc_ranking(hits) == ["d2", "d1"]
