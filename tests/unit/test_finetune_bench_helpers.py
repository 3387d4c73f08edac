"""Pure helpers of benchmarks/finetune.py: decision parsing, targets, split, the in-memory BM25
retriever, scoring and result shaping (the script is imported from its path; no model loads)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from llmops_dagster.qa import QAItem
from llmops_dagster.train.dataset import ContextPassage

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "finetune.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("finetune_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and annotations resolve through sys.modules
    spec.loader.exec_module(module)
    return module


# ---- decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes. The trial shows a benefit.", "yes"),
        ("no, it does not", "no"),
        ("MAYBE: the data are mixed", "maybe"),
        ("**Yes**, clearly", "yes"),
        ("Answer: No. Nothing changed.", "no"),
        ("  - maybe", "maybe"),
        ("The results suggest yes.", None),
        ("Yesterday it rained", None),
        ("Not really", None),
        ("", None),
        ("Answer:", None),
    ],
)
def test_parse_decision(bench: ModuleType, text: str, expected: str | None) -> None:
    assert bench.parse_decision(text) == expected


def test_decision_scores_counts_and_majority(bench: ModuleType) -> None:
    predictions = ["Yes. a", "No.", "The answer is maybe", "maybe so"]
    gold = ["yes", "yes", "maybe", "maybe"]
    assert bench.decision_scores(predictions, gold) == [1.0, 0.0, 0.0, 1.0]
    assert bench.decision_counts(predictions) == {"yes": 1, "no": 1, "maybe": 1, "none": 1}
    assert bench.majority_share(gold) == 0.5
    assert bench.majority_share(["yes", "no", "yes", "yes"]) == 0.75
    assert bench.majority_share([]) == 0.0
    with pytest.raises(ValueError):
        bench.decision_scores(["yes"], ["yes", "no"])


# ---- training target ---------------------------------------------------------------------


def test_first_sentence_keeps_abbreviations_and_decimals(bench: ModuleType) -> None:
    text = "Results were clear, e.g. the p < 0.05. Second one here."
    assert bench.first_sentence(text) == "Results were clear, e.g. the p < 0.05."
    assert bench.first_sentence("  A study (n=3) found   X.\nThen 2 more.") == (
        "A study (n=3) found X."
    )
    assert bench.first_sentence("No full stop at all") == "No full stop at all"
    assert bench.first_sentence("one two three four. Five.", max_words=2) == "one two"
    assert bench.first_sentence("   ") == ""


def test_clip_words(bench: ModuleType) -> None:
    assert bench.clip_words("a b  c d", 2) == "a b"
    assert bench.clip_words("a b  c", 3) == "a b  c"  # not cut: unchanged
    assert bench.clip_words("a b c", None) == "a b c"
    assert bench.clip_words("a b c", 0) == "a b c"


def test_decision_target(bench: ModuleType) -> None:
    long_answer = "Statins lowered LDL by 30%. Side effects were rare."
    assert bench.decision_target("yes", long_answer) == "Yes. Statins lowered LDL by 30%."
    assert bench.decision_target("maybe", "") == "Maybe."
    assert bench.parse_decision(bench.decision_target("no", long_answer)) == "no"
    with pytest.raises(ValueError):
        bench.decision_target("unsure", long_answer)


# ---- data ---------------------------------------------------------------------------------


def _items(ids: str) -> list[QAItem]:
    return [QAItem(id=c, question=f"q{c}", reference_answer="r") for c in ids]


def test_split_is_fixed_disjoint_and_sorted(bench: ModuleType) -> None:
    train, heldout = bench.split_train_heldout(
        _items("jihgfedcba"), n_train=5, n_heldout=3, seed=13
    )
    assert [i.id for i in train] == ["b", "c", "f", "g", "i"]
    assert [i.id for i in heldout] == ["a", "d", "h"]
    # The input order does not matter, only the ids and the seed.
    again = bench.split_train_heldout(_items("abcdefghij"), n_train=5, n_heldout=3, seed=13)
    assert ([i.id for i in again[0]], [i.id for i in again[1]]) == (
        ["b", "c", "f", "g", "i"],
        ["a", "d", "h"],
    )
    other = bench.split_train_heldout(_items("abcdefghij"), n_train=5, n_heldout=3, seed=14)
    assert [i.id for i in other[1]] != ["a", "d", "h"]


@pytest.mark.parametrize(("n_train", "n_heldout"), [(8, 3), (0, 3), (3, 0)])
def test_split_rejects_bad_sizes(bench: ModuleType, n_train: int, n_heldout: int) -> None:
    with pytest.raises(ValueError):
        bench.split_train_heldout(
            _items("abcdefghij"), n_train=n_train, n_heldout=n_heldout, seed=1
        )


def test_read_jsonl_splits_on_newlines_only(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    rows = [{"id": "1", "text": "line\u2028separator and \x85 next-line"}, {"id": "2"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    assert bench.read_jsonl(path) == rows


def test_pubmed_rows_to_items_and_passages(bench: ModuleType) -> None:
    rows = [
        {
            "id": "111",
            "question": "Does A help?",
            "answer": "A helps.",
            "contexts": ["ctx one", "ctx two"],
            "final_decision": "yes",
        },
        {
            "id": "222",
            "question": "Does B?",
            "answer": "B no.",
            "contexts": ["ctx three"],
            "final_decision": "no",
        },
    ]
    items = bench.pubmed_items(rows)
    assert items[0] == QAItem(
        id="111",
        question="Does A help?",
        reference_answer="A helps.",
        relevant_doc_ids=("111",),
        extra={"final_decision": "yes"},
    )
    assert items[1].extra["final_decision"] == "no"
    passages = bench.pubmed_passages(rows)
    assert [(p.chunk_id, p.doc_id, p.text) for p in passages] == [
        ("111-0", "111", "ctx one"),
        ("111-1", "111", "ctx two"),
        ("222-0", "222", "ctx three"),
    ]


# ---- retriever ----------------------------------------------------------------------------


def _passages(*texts: str) -> list[ContextPassage]:
    return [ContextPassage(f"c{i}", f"d{i}", text) for i, text in enumerate(texts)]


def test_bm25_scores_and_order(bench: ModuleType) -> None:
    index = bench.PassageIndex(
        _passages("aspirin reduces fever", "statins lower cholesterol", "aspirin aspirin bleeding")
    )
    hits = index.search("Does aspirin work?", k=3)
    # N=3, df=2: idf = ln(1 + 1.5/2.5); equal lengths: tf·2.2 / (tf + 1.2).
    idf = math.log(1.6)
    assert [h.chunk_id for h in hits] == ["c2", "c0"]  # the statins passage scores 0: left out
    assert hits[0].score == pytest.approx(idf * 2 * 2.2 / 3.2)
    assert hits[1].score == pytest.approx(idf * 1.0)
    assert hits[0].doc_id == "d2" and hits[0].text == "aspirin aspirin bleeding"
    assert [h.chunk_id for h in index.search("aspirin", k=1)] == ["c2"]
    assert index.search("unrelated words", k=3) == []
    assert index.search("aspirin", mode="hybrid_rrf", k=0) == []


def test_bm25_length_normalisation_and_ties(bench: ModuleType) -> None:
    index = bench.PassageIndex(
        _passages("fever fever", "fever cough", "fever cough", "fever cough rash rash rash rash")
    )
    hits = index.search("cough", k=4)
    # The two identical passages tie and keep index order; the long one comes last.
    assert [h.chunk_id for h in hits] == ["c1", "c2", "c3"]
    assert hits[0].score == hits[1].score > hits[2].score


def test_bm25_hit_words_clips_text_not_matching(bench: ModuleType) -> None:
    index = bench.PassageIndex(_passages("one two three aspirin"), hit_words=2)
    (hit,) = index.search("aspirin", k=3)  # found by a word beyond the clip
    assert hit.text == "one two"


def test_fixed_context_retriever(bench: ModuleType) -> None:
    a, b, c = _passages("x", "y", "z")
    retriever = bench.FixedContextRetriever({"q1": [a, b, c], "q2": []})
    assert retriever.search("q1", mode="anything", k=2) == [a, b]
    assert retriever.search("q2", k=3) == []
    with pytest.raises(KeyError):
        retriever.search("unknown", k=1)


# ---- scoring and results --------------------------------------------------------------------


def test_answer_f1_strips_citations(bench: ModuleType) -> None:
    prediction = "The fee is 30 days [chunk:abc123]."
    assert bench.strip_citations(prediction) == "The fee is 30 days ."
    assert bench.answer_f1(prediction, "Claims within 30 days.") == 0.5
    assert bench.token_f1(prediction, "Claims within 30 days.") == pytest.approx(4 / 9)


def test_length_order(bench: ModuleType) -> None:
    assert bench.length_order([3, 1, 3, 0]) == [3, 1, 0, 2]
    assert bench.length_order([]) == []


def test_compare_scores(bench: ModuleType) -> None:
    constant = bench.compare_scores("token_f1", [0.2, 0.4], [0.7, 0.9])
    assert constant == {
        "metric": "token_f1",
        "n": 2,
        "base": 0.3,
        "adapter": 0.8,
        "diff": 0.5,
        "ci95": [0.5, 0.5],
        "beats_base": True,
    }
    spread = bench.compare_scores("decision_accuracy", [0, 0, 1, 1], [1, 1, 1, 1])
    assert (spread["diff"], spread["ci95"], spread["beats_base"]) == (0.5, [0.0, 1.0], False)
    mixed = bench.compare_scores("x", [0, 1, 0, 1, 0], [1, 0, 1, 1, 1], n_resamples=2000, seed=13)
    assert (mixed["base"], mixed["adapter"], mixed["diff"], mixed["ci95"]) == (
        0.4,
        0.8,
        0.4,
        [-0.4, 1.0],
    )
    with pytest.raises(ValueError):
        bench.compare_scores("x", [], [])
    with pytest.raises(ValueError):
        bench.compare_scores("x", [1.0], [1.0, 0.0])


def test_result_section_shape(bench: ModuleType) -> None:
    primary = bench.compare_scores("decision_accuracy", [0, 1], [1, 1])
    second = bench.compare_scores("token_f1", [0.1, 0.2], [0.1, 0.2])
    section = bench.result_section(primary, [second], n_train=5)
    assert list(section)[:7] == ["metric", "n", "base", "adapter", "diff", "ci95", "beats_base"]
    assert section["metric"] == "decision_accuracy" and section["n"] == 2
    assert section["metrics"] == {"decision_accuracy": primary, "token_f1": second}
    assert section["n_train"] == 5
    only = bench.result_section(second)
    assert only["metrics"] == {"token_f1": second} and only["diff"] == 0.0
    with pytest.raises(ValueError):
        bench.result_section(primary, [primary])


# ---- the sample corpus's training mix -----------------------------------------------------


def test_sample_training_mix_is_the_projects_mix_without_confidential_or_golden_text(
    bench: ModuleType,
) -> None:
    """The sample part trains on the project's mix: the 60 hand-written items plus 120 RAFT
    drafts of the public passages; none of the 14 passages of the confidential folders enters
    a prompt, and the 64 drafts that restate a golden item are dropped."""
    from llmops_dagster.config import PROJECT_ROOT
    from llmops_dagster.qa import load_qa_jsonl
    from llmops_dagster.sources.source_config import default_sources_config
    from tests.support.stubs import ChatMLTokenizer

    sample_dir = PROJECT_ROOT / "data" / "sample"
    audience = default_sources_config(sample_dir).filesystem.audience_for
    golden = load_qa_jsonl(bench.GOLDEN, require_reference_answer=True)
    records = bench.sample_chunk_records(sample_dir, audience)
    confidential = {r.chunk_id for r in records if r.audience != ("public",)}
    assert len(confidential) == 14

    mix = bench.sample_training_mix(
        sample_dir, tokenizer=ChatMLTokenizer(), audience=audience, golden=golden
    )

    assert (mix.n_handwritten, len(mix.drafts.items)) == (60, 120)
    assert (len(mix.dataset.train), len(mix.dataset.validation)) == (144, 36)
    assert mix.drafts.dropped_golden_overlap == 64
    examples = [*mix.dataset.train, *mix.dataset.validation]
    used = {c for e in examples for c in e.context_chunk_ids}
    assert not used & confidential
    golden_questions = {g.question for g in golden}
    assert not {e.question for e in examples} & golden_questions


def test_audience_bm25_search_drops_what_the_principal_may_not_read(bench: ModuleType) -> None:
    from llmops_dagster.access import Principal
    from llmops_dagster.train.raft import ChunkRecord

    records = [
        ChunkRecord("c1", "d1", "", "refund card payments", ("public",)),
        ChunkRecord("c2", "d2", "", "refund card payments salary", ("hr",)),
        ChunkRecord("c3", "d3", "", "holiday card", ("public",)),
    ]
    search = bench.audience_bm25_search(records, depth=5)
    public = search(["refund card"], Principal.public())[0]
    hr = search(["refund card"], Principal(name="hr-reader", groups=frozenset({"hr"})))[0]
    assert [h.chunk_id for h in public] == ["c1", "c3"]
    assert [h.chunk_id for h in hr] == ["c1", "c2", "c3"]
