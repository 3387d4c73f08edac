"""Drafted golden candidates (evaluate/golden_candidates.py) on the real sample corpus (the
chunks tests/unit/test_raft.py builds from data/sample), and the review that moves them into
the golden set (``llmops-dagster golden list|accept|reject``) and re-triggers evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmops_dagster.evaluate.golden import load_golden
from llmops_dagster.evaluate.golden_candidates import (
    CANDIDATES_FILE,
    ITEM_TYPE,
    GoldenDraft,
    GoldenReview,
    GoldenReviewError,
    draft_golden_candidates,
)
from llmops_dagster.evaluate.triggers import EvaluationInputs
from llmops_dagster.qa import QAItem, load_qa_jsonl
from tests.unit.test_raft import GOLDEN, HR, HR_DOCS, SECURITY_DOCS, Corpus, corpus

__all__ = ["corpus"]  # the fixture, imported for this module

pytestmark = pytest.mark.unit

CONFIDENTIAL = HR_DOCS | SECURITY_DOCS


@pytest.fixture(scope="module")
def golden() -> list[QAItem]:
    return load_qa_jsonl(GOLDEN)


@pytest.fixture(scope="module")
def draft(corpus: Corpus, golden: list[QAItem]) -> GoldenDraft:
    return draft_golden_candidates(corpus.chunks, golden=golden)


@pytest.fixture()
def review(tmp_path: Path, draft: GoldenDraft) -> GoldenReview:
    """A copy of the repository's golden set and the drafted candidates, pending."""
    golden_path = tmp_path / "golden" / "qa.jsonl"
    golden_path.parent.mkdir()
    shutil.copy(GOLDEN, golden_path)
    found = GoldenReview(tmp_path / "datasets" / CANDIDATES_FILE, golden_path)
    found.replace_pending(draft.candidates)
    return found


def test_candidates_drafted_as_public_hold_nothing_from_the_confidential_documents(
    draft: GoldenDraft,
) -> None:
    """219 chunks, 20 of them in the four hr/security documents: those are counted and never
    drafted from; 40 candidates over 40 documents, after 70 drafts restating a golden item and
    4 repeated questions were dropped."""
    assert draft.metadata() == {
        "n_candidates": 40,
        "n_dropped_golden_overlap": 70,
        "n_dropped_duplicate": 4,
        "n_chunks_dropped_audience": 20,
        "n_chunks_seen": 219,
        "n_already_decided": 0,
        "n_documents": 40,
    }
    docs = {d for c in draft.candidates for d in c.item.relevant_doc_ids}
    assert not docs & CONFIDENTIAL
    for c in draft.candidates:
        assert c.status == "pending" and c.id.startswith("gd-") and c.item.type == ITEM_TYPE
        assert len(c.item.relevant_doc_ids) == 1 and c.item.groups == ()
        assert c.item.reference_answer
    assert len({c.item.question.lower() for c in draft.candidates}) == 40


def test_an_audience_with_a_group_drafts_its_documents_with_that_group(
    corpus: Corpus, golden: list[QAItem]
) -> None:
    """The audience is what decides: drafted as hr, only the 8 security chunks are left out and
    the hr candidates carry ``hr`` (so evaluation asks them as hr)."""
    hr = draft_golden_candidates(corpus.chunks, audience=HR, golden=golden, max_items=500)
    assert hr.metadata()["n_chunks_dropped_audience"] == 8
    hr_items = [c.item for c in hr.candidates if set(c.item.relevant_doc_ids) & HR_DOCS]
    assert hr_items and all(i.groups == ("hr",) for i in hr_items)
    assert not {d for c in hr.candidates for d in c.item.relevant_doc_ids} & SECURITY_DOCS


def test_drafting_is_deterministic_for_a_seed(corpus: Corpus, golden: list[QAItem]) -> None:
    def ids(seed: int) -> list[str]:
        return [
            c.id
            for c in draft_golden_candidates(corpus.chunks, golden=golden, seed=seed).candidates
        ]

    assert ids(13) == ids(13) and ids(13) != ids(14)


def test_accept_appends_exactly_one_item_and_changes_the_golden_digest(
    review: GoldenReview, draft: GoldenDraft
) -> None:
    before = load_golden(review.golden_path)
    chosen = draft.candidates[0]
    decided, digest = review.accept(chosen.id, reviewer="ana")
    after = load_golden(review.golden_path)
    assert len(after.items) == len(before.items) + 1
    assert after.items[-1] == chosen.item
    assert digest == after.version != before.version
    assert (decided.status, decided.reviewer) == ("accepted", "ana")
    assert chosen.id not in {c.id for c in review.candidates()}
    assert [c.id for c in review.candidates("accepted")] == [chosen.id]


def test_the_evaluation_trigger_sees_the_accepted_items_new_digest(review: GoldenReview) -> None:
    """The evaluation inputs sensor's fingerprint (evaluate/triggers.py) changes with it."""
    then = EvaluationInputs("prompt-1", load_golden(review.golden_path).version, "kb-1")
    _, digest = review.accept(review.candidates()[0].id)
    now = EvaluationInputs("prompt-1", digest, "kb-1")
    assert now.changes_since(then) == ["new golden set digest"]


def test_reject_removes_it_from_the_list_and_leaves_the_golden_set(
    review: GoldenReview, draft: GoldenDraft
) -> None:
    before = review.golden_path.read_bytes()
    rejected = review.reject(draft.candidates[1].id, reviewer="ana")
    assert rejected.status == "rejected"
    assert [c.id for c in review.candidates()] == [
        c.id for c in draft.candidates if c.id != rejected.id
    ]
    assert review.golden_path.read_bytes() == before


def test_accepting_twice_is_refused_with_a_clear_error(
    review: GoldenReview, draft: GoldenDraft
) -> None:
    chosen = draft.candidates[2].id
    review.accept(chosen, reviewer="ana")
    golden_then = review.golden_path.read_bytes()
    with pytest.raises(
        GoldenReviewError,
        match=f"golden candidate {chosen} was already accepted on .* by ana: it is in",
    ):
        review.accept(chosen)
    with pytest.raises(GoldenReviewError, match="already accepted"):
        review.reject(chosen)
    assert review.golden_path.read_bytes() == golden_then


def test_an_unknown_id_names_itself(review: GoldenReview) -> None:
    before = review.path.read_bytes()
    for decide in (review.accept, review.reject):
        with pytest.raises(GoldenReviewError, match="unknown golden candidate id 'gd-nope'"):
            decide("gd-nope")
    assert review.path.read_bytes() == before


def test_drafting_again_keeps_the_decisions_and_proposes_nothing_decided(
    review: GoldenReview, corpus: Corpus, draft: GoldenDraft
) -> None:
    accepted, rejected = draft.candidates[0].id, draft.candidates[1].id
    review.accept(accepted)
    review.reject(rejected)
    grown = load_golden(review.golden_path).items
    again = draft_golden_candidates(corpus.chunks, golden=grown, decided=review.decided_ids())
    # The accepted item is golden now: its sentence restates it (with one more draft: 70 -> 72);
    # the rejected one is counted and left out; the sample is full again.
    assert again.metadata()["n_dropped_golden_overlap"] == 72
    assert again.already_decided == 1 and len(again.candidates) == 40
    assert not {accepted, rejected} & {c.id for c in again.candidates}
    kept = review.replace_pending(again.candidates)
    assert {c.id: c.status for c in kept if c.status != "pending"} == {
        accepted: "accepted",
        rejected: "rejected",
    }


def test_cli_golden_list_accept_reject(review: GoldenReview, tmp_path: Path) -> None:
    from llmops_dagster.cli import main

    env = {
        "LLMOPS_HOME": str(tmp_path),  # the datasets folder: <home>/datasets
        "LLMOPS_GOLDEN": str(review.golden_path),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "COLUMNS": "300",
    }
    runner = CliRunner()
    listed = runner.invoke(main, ["golden", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    pending = [c["id"] for c in json.loads(listed.output)]
    assert len(pending) == 40
    table = runner.invoke(main, ["golden", "list"], env=env)
    assert table.exit_code == 0 and pending[0] in table.output

    accepted = runner.invoke(main, ["golden", "accept", pending[0], "--reviewer", "ana"], env=env)
    assert accepted.exit_code == 0, accepted.output
    digest = load_golden(review.golden_path).version
    assert f"golden digest: {digest}" in accepted.output
    again = runner.invoke(main, ["golden", "accept", pending[0]], env=env)
    assert again.exit_code == 1 and "was already accepted" in again.output
    unknown = runner.invoke(main, ["golden", "reject", "gd-nope"], env=env)
    assert unknown.exit_code == 1 and "unknown golden candidate id 'gd-nope'" in unknown.output
    rejected = runner.invoke(main, ["golden", "reject", pending[1]], env=env)
    assert rejected.exit_code == 0 and f"{pending[1]}: rejected" in rejected.output
    left = runner.invoke(main, ["golden", "list", "--json"], env=env)
    assert [c["id"] for c in json.loads(left.output)] == pending[2:]


def test_a_golden_set_that_does_not_load_refuses_the_accept_and_nothing_is_written(
    review: GoldenReview,
) -> None:
    """The append reads the set with its loader first (llmops_dagster/qa.py append_qa_item)."""
    with review.golden_path.open("a") as handle:
        handle.write('{"id": "q01", "question": "a repeated id"}\n')
    golden_then, candidates_then = review.golden_path.read_bytes(), review.path.read_bytes()
    chosen = review.candidates()[0].id
    with pytest.raises(
        GoldenReviewError, match=r"golden set \(LLMOPS_GOLDEN\): .*duplicate id 'q01'"
    ):
        review.accept(chosen)
    assert review.golden_path.read_bytes() == golden_then
    assert review.path.read_bytes() == candidates_then
