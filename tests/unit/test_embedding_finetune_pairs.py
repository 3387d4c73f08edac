"""Inverse-cloze triples for the embedding fine-tuning (embed/finetune_pairs.py) on the real
sample corpus as the pipeline chunks it (test_raft.py's fixture), with the in-memory BM25:
exact counts, the audience and golden-overlap rules, where each part of a triple comes from,
determinism, the shuffled (made worse on purpose) variant; and the recipe and folder rules of
embed/finetune.py that need no training."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from llmops_dagster.access import Principal
from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_definitions
from llmops_dagster.embed.finetune import (
    STATS_FILE,
    EmbedFinetuneError,
    EmbedRecipe,
    finetune_embedder,
    model_folder_name,
    planned_steps,
    training_columns,
)
from llmops_dagster.embed.finetune_pairs import (
    MemoryBM25,
    PairsError,
    TrainingPair,
    build_pairs,
    shuffle_positives,
    without_sentence,
)
from llmops_dagster.qa import QAItem
from llmops_dagster.rag.hits import content_tokens
from llmops_dagster.train.raft import GoldenOverlapRule, _GoldenRefs, _jaccard
from tests.unit.test_raft import HR, HR_DOCS, SECURITY_DOCS, Corpus, corpus, golden  # noqa: F401

pytestmark = pytest.mark.unit

CONFIDENTIAL = HR_DOCS | SECURITY_DOCS


def _public_counts(**changes: int) -> dict[str, int]:
    counts = {
        "pairs": 195,
        "candidates": 195,
        "chunks_seen": 219,
        "dropped_audience": 20,
        "skipped_no_sentence": 0,
        "skipped_single_sentence": 0,
        "dropped_golden_question": 4,
        "dropped_golden_answer": 40,
        "dropped_golden": 44,
        "skipped_all_golden": 4,
        "dropped_no_negative": 0,
        "kept_sentence": 20,
    }
    return {**counts, **changes}


def test_one_triple_per_public_chunk_less_golden_restatements(
    corpus: Corpus,  # noqa: F811
    golden: list[QAItem],  # noqa: F811
) -> None:
    """219 chunks: the 20 confidential ones are never read as public; 44 held-out sentences
    restate a golden item (4 by question, 40 by answer) and the chunk's next one is tried; 4
    chunks have no other sentence; 195 triples, 20 of them (10%) keeping their sentence."""
    report = build_pairs(corpus.chunks, MemoryBM25(corpus.chunks), golden=golden)
    assert report.counts() == _public_counts()
    without = build_pairs(corpus.chunks, MemoryBM25(corpus.chunks))
    assert without.counts() == _public_counts(
        pairs=199,
        candidates=199,
        dropped_golden_question=0,
        dropped_golden_answer=0,
        dropped_golden=0,
        skipped_all_golden=0,
    )


def test_no_query_restates_a_golden_item(
    corpus: Corpus,  # noqa: F811
    golden: list[QAItem],  # noqa: F811
) -> None:
    report = build_pairs(corpus.chunks, MemoryBM25(corpus.chunks), golden=golden)
    rule = GoldenOverlapRule()
    questions = [set(content_tokens(g.question)) for g in golden]
    refs = _GoldenRefs(str(g.reference_answer) for g in golden if g.reference_answer)
    for pair in report.pairs:
        words = content_tokens(pair.query)
        assert all(_jaccard(words, q) < rule.question_jaccard for q in questions)
        assert not refs.best_f1_at_least(pair.query, rule.answer_f1)
    # Without the rule, 31 of the 199 queries would restate a golden item.
    plain = build_pairs(corpus.chunks, MemoryBM25(corpus.chunks))
    restating = [
        p
        for p in plain.pairs
        if any(_jaccard(content_tokens(p.query), q) >= rule.question_jaccard for q in questions)
        or refs.best_f1_at_least(p.query, rule.answer_f1)
    ]
    assert len(restating) == 31


def test_confidential_chunks_are_never_query_positive_or_negative_for_the_public(
    corpus: Corpus,  # noqa: F811
    golden: list[QAItem],  # noqa: F811
) -> None:
    report = build_pairs(corpus.chunks, MemoryBM25(corpus.chunks), golden=golden)
    confidential = {c.chunk_id for c in corpus.chunks if c.doc_id in CONFIDENTIAL}
    assert len(confidential) == 20
    texts = {c.text for c in corpus.chunks if c.chunk_id in confidential}
    for pair in report.pairs:
        assert pair.doc_id not in CONFIDENTIAL and pair.negative_doc_id not in CONFIDENTIAL
        assert pair.chunk_id not in confidential and pair.negative_chunk_id not in confidential
        assert pair.negative not in texts
    # As hr: the 12 hr chunks join, the 8 security ones stay out.
    hr = build_pairs(corpus.chunks, MemoryBM25(corpus.chunks, reader=HR), reader=HR, golden=golden)
    assert hr.counts() == _public_counts(
        pairs=207, candidates=207, dropped_audience=8, kept_sentence=21
    )
    assert Counter(p.doc_id in HR_DOCS for p in hr.pairs) == {False: 195, True: 12}
    assert not {p.doc_id for p in hr.pairs} & SECURITY_DOCS


def test_a_bm25_search_without_the_audience_filter_is_refused(
    corpus: Corpus,  # noqa: F811
) -> None:
    leaky = MemoryBM25(corpus.chunks, reader=Principal("all", frozenset({"hr", "security"})))
    with pytest.raises(PairsError, match="may not read"):
        build_pairs(corpus.chunks, leaky)


def test_positive_is_the_query_chunk_and_negative_another_document(
    corpus: Corpus,  # noqa: F811
    golden: list[QAItem],  # noqa: F811
) -> None:
    report = build_pairs(corpus.chunks, MemoryBM25(corpus.chunks), golden=golden)
    chunks = {c.chunk_id: c for c in corpus.chunks}
    for pair in report.pairs:
        chunk = chunks[pair.chunk_id]
        assert chunk.doc_id == pair.doc_id
        chunk_words = set(content_tokens(chunk.text))
        assert set(content_tokens(pair.query)) <= chunk_words
        assert set(content_tokens(pair.positive)) <= chunk_words
        if pair.kept_sentence:
            assert pair.positive == " ".join(chunk.text.split())
        else:
            assert pair.query not in pair.positive
        assert pair.negative_doc_id != pair.doc_id
        assert chunks[pair.negative_chunk_id].text == pair.negative
    assert sum(p.kept_sentence for p in report.pairs) == 20


def test_max_pairs_spreads_the_sample_over_documents(
    corpus: Corpus,  # noqa: F811
    golden: list[QAItem],  # noqa: F811
) -> None:
    report = build_pairs(corpus.chunks, MemoryBM25(corpus.chunks), golden=golden, max_pairs=64)
    per_doc = Counter(p.doc_id for p in report.pairs)
    assert (len(report.pairs), report.candidates, len(per_doc), max(per_doc.values())) == (
        64,
        195,
        44,
        2,
    )


def test_same_seed_same_digest_and_another_seed_another(
    corpus: Corpus,  # noqa: F811
    golden: list[QAItem],  # noqa: F811
) -> None:
    bm25 = MemoryBM25(corpus.chunks)
    first = build_pairs(corpus.chunks, bm25, golden=golden, seed=13)
    again = build_pairs(corpus.chunks, bm25, golden=golden, seed=13)
    other = build_pairs(corpus.chunks, bm25, golden=golden, seed=14)
    assert first.digest() == again.digest()
    assert [p.to_record() for p in first.pairs] == [p.to_record() for p in again.pairs]
    assert other.digest() != first.digest()


def test_shuffled_pairs_give_every_query_another_positive(
    corpus: Corpus,  # noqa: F811
    golden: list[QAItem],  # noqa: F811
) -> None:
    bm25 = MemoryBM25(corpus.chunks)
    plain = build_pairs(corpus.chunks, bm25, golden=golden)
    shuffled = build_pairs(corpus.chunks, bm25, golden=golden, shuffled=True)
    assert shuffled.shuffled and shuffled.digest() != plain.digest()
    assert [p.query for p in shuffled.pairs] == [p.query for p in plain.pairs]
    assert [p.negative for p in shuffled.pairs] == [p.negative for p in plain.pairs]
    own = {p.query: p.positive for p in plain.pairs}
    assert all(p.positive != own[p.query] for p in shuffled.pairs)
    # The same positives, each used once: only who gets which changed.
    assert Counter(p.positive for p in shuffled.pairs) == Counter(own.values())


def test_shuffle_of_one_pair_keeps_it() -> None:
    pair = TrainingPair("q", "p", "n", "c1", "d1", "c2", "d2")
    assert shuffle_positives([pair], 13) == [pair]


def test_without_sentence_removes_it_verbatim_or_as_a_run_of_words() -> None:
    text = "First line here.\nThe held out\nsentence spans lines. Last one."
    assert without_sentence("A b c. Held out one. D e f.", "Held out one.") == "A b c. D e f."
    assert without_sentence(text, "The held out sentence spans lines.") == (
        "First line here. Last one."
    )


def test_recipe_rules_name_the_bad_field() -> None:
    with pytest.raises(EmbedFinetuneError, match="batch_size must be >= 2"):
        EmbedRecipe(batch_size=1).validate()
    with pytest.raises(EmbedFinetuneError, match="max_steps must be >= 1"):
        EmbedRecipe(max_steps=0).validate()
    with pytest.raises(EmbedFinetuneError, match="only MultipleNegativesRankingLoss"):
        EmbedRecipe(loss="TripletLoss").validate()
    assert planned_steps(195, EmbedRecipe(max_steps=None, epochs=2, batch_size=16)) == 26
    assert planned_steps(195, EmbedRecipe(max_steps=7)) == 7


def test_folder_name_changes_with_data_and_recipe_only(tmp_path: Path) -> None:
    base = tmp_path / "mini"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    name = model_folder_name(str(base), "d" * 64, EmbedRecipe())
    assert name.startswith("mini-ft-") and len(name) == len("mini-ft-") + 8
    assert model_folder_name(str(base), "d" * 64, EmbedRecipe()) == name
    assert model_folder_name(str(base), "e" * 64, EmbedRecipe()) != name
    assert model_folder_name(str(base), "d" * 64, EmbedRecipe(learning_rate=1e-4)) != name
    assert model_folder_name(str(base), "d" * 64, EmbedRecipe(hard_negative=True)) != name


def test_the_bm25_negative_is_trained_on_only_when_the_recipe_asks() -> None:
    pairs = [
        TrainingPair("q1", "p1", "n1", "c1", "d1", "c2", "d2"),
        TrainingPair("q2", "p2", "n2", "c3", "d3", "c4", "d4"),
    ]
    assert training_columns(pairs, EmbedRecipe()) == {
        "anchor": ["q1", "q2"],
        "positive": ["p1", "p2"],
    }
    assert training_columns(pairs, EmbedRecipe(hard_negative=True)) == {
        "anchor": ["q1", "q2"],
        "positive": ["p1", "p2"],
        "negative": ["n1", "n2"],
    }


def test_without_negatives_no_search_runs_and_the_pairs_keep_queries_and_positives(
    corpus: Corpus,  # noqa: F811
    golden: list[QAItem],  # noqa: F811
) -> None:
    def no_search(query: str, k: int) -> list[tuple[str, str, str]]:
        raise AssertionError(f"searched for {query!r}")

    with_negatives = build_pairs(corpus.chunks, MemoryBM25(corpus.chunks), golden=golden)
    report = build_pairs(corpus.chunks, no_search, negatives=False, golden=golden)
    assert report.counts() == _public_counts()
    assert report.negatives is False and with_negatives.negatives is True
    assert [(p.query, p.positive, p.chunk_id) for p in report.pairs] == [
        (p.query, p.positive, p.chunk_id) for p in with_negatives.pairs
    ]
    assert {(p.negative, p.negative_chunk_id, p.negative_doc_id) for p in report.pairs} == {
        ("", "", "")
    }
    # The digest covers what the trainer reads: pairs without negatives are other data.
    assert report.digest() != with_negatives.digest()
    assert build_pairs(corpus.chunks, None, negatives=False).counts()["pairs"] == 199
    with pytest.raises(PairsError, match="hard negatives need a BM25 search"):
        build_pairs(corpus.chunks, None)


def test_a_hard_negative_recipe_refuses_pairs_built_without_negatives(tmp_path: Path) -> None:
    pairs = [
        TrainingPair("q1", "p1", "", "c1", "d1", "", ""),
        TrainingPair("q2", "p2", "n2", "c3", "d3", "c4", "d4"),
    ]
    assert list(training_columns(pairs, EmbedRecipe())) == ["anchor", "positive"]
    with pytest.raises(EmbedFinetuneError, match="1 of 2 pairs have none"):
        training_columns(pairs, EmbedRecipe(hard_negative=True))
    # Before any model is loaded (the base folder does not even exist).
    with pytest.raises(EmbedFinetuneError, match="1 of 2 pairs have none"):
        finetune_embedder(
            str(tmp_path / "absent"),
            pairs,
            EmbedRecipe(hard_negative=True),
            tmp_path / "store",
            data_digest="d" * 64,
        )


def test_an_existing_folder_for_the_same_data_and_recipe_is_reused(tmp_path: Path) -> None:
    """No training: the folder with its stats file is what a finished fine-tuning leaves."""
    base = tmp_path / "mini"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    recipe = EmbedRecipe()
    store = tmp_path / "store"
    folder = store / model_folder_name(str(base), "d" * 64, recipe)
    folder.mkdir(parents=True)
    saved = {
        "model_id": "mini-ft-x@abc",
        "base_model_id": "mini@def",
        "data_digest": "d" * 64,
        "examples": 3,
        "steps": 2,
        "examples_seen": 32,
        "seconds": 1.5,
        "final_loss": 0.5,
        "losses": [0.9, 0.5],
        "reused": False,
        "recipe": recipe.to_dict(),
    }
    (folder / STATS_FILE).write_text(json.dumps(saved))
    pair = TrainingPair("q", "p", "n", "c1", "d1", "c2", "d2")
    found, stats = finetune_embedder(str(base), [pair], recipe, store, data_digest="d" * 64)
    assert found == folder
    assert stats.reused and (stats.model_id, stats.steps) == ("mini-ft-x@abc", 2)
    with pytest.raises(EmbedFinetuneError, match="no training pairs"):
        finetune_embedder(str(base), [], recipe, store, data_digest="d" * 64)


def test_demo_and_reindex_leave_out_the_embedding_finetune_its_job_selects_it() -> None:
    """whole_graph (the demo) must stay short and a reindex must not train: the fine-tuning,
    its shadow index and their evaluation have their own job."""
    defs = build_definitions(Settings())

    def keys(job: str) -> set[str]:
        layer = defs.resolve_job_def(job).asset_layer
        return {k.to_user_string() for k in layer.executable_asset_keys}

    whole, reindex = keys("whole_graph"), keys("reindex")
    assert {"embedding_finetune", "shadow_index"} & (whole | reindex) == set()
    assert "search_index" in whole and "search_index" in reindex
    assert keys("finetune_embedding") == {
        "embedding_finetune",
        "shadow_index",
        "rag_evaluation",
        "champion_model",
    }
