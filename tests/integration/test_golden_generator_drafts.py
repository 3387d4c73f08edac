"""Golden questions drafted by the real packaged generator (SmolLM2-135M, greedy, 40 new tokens
at most) on 3 chunks: every candidate keeps its template draft's id, answer and document; each
question is either a generator draft that passes the checks or the template question, and the
counts say which (``n_generator_drafts`` + ``n_template_fallbacks`` = 3)."""

from __future__ import annotations

import pytest

from llmops_dagster.config import Settings
from llmops_dagster.evaluate.golden_candidates import draft_golden_candidates
from llmops_dagster.evaluate.golden_drafter import check_question, draft_with_generator
from llmops_dagster.resources import ModelsResource
from llmops_dagster.train.raft import ChunkRecord

pytestmark = pytest.mark.integration

CHUNKS = [
    ChunkRecord("c-exp", "fs:handbook/expenses.md", "Expenses",
                "Claims must be submitted in Ledgerly within 30 days of the purchase."),
    ChunkRecord("c-call", "fs:runbooks/on-call.md", "On-call",
                "The primary on-call engineer receives an allowance of 250 euros per full week."),
    ChunkRecord("c-leave", "fs:handbook/leave.md", "Leave",
                "Employees get 25 days of paid annual leave per calendar year."),
]  # fmt: skip


def test_the_real_generator_drafts_checked_questions_or_falls_back_to_the_template() -> None:
    models = ModelsResource.from_settings(Settings().override(models={"torch_threads": 1}))
    generator = models.generator()
    templates = draft_golden_candidates(CHUNKS, max_items=3)

    def drafter(requests):
        return draft_with_generator(requests, generator)

    drafted = draft_golden_candidates(CHUNKS, max_items=3, question_drafter=drafter)
    counts = drafted.metadata()
    assert counts["n_generator_drafts"] + counts["n_template_fallbacks"] == 3
    # Observed here: 1 written question passes (leave), 2 drift off their sentence.
    assert counts["n_generator_drafts"] >= 1
    assert drafted.generator is not None
    assert sum(drafted.generator.fallback_reasons.values()) == counts["n_template_fallbacks"]
    assert [c.id for c in drafted.candidates] == [c.id for c in templates.candidates]
    for mine, template in zip(drafted.candidates, templates.candidates, strict=True):
        assert mine.item.reference_answer == template.item.reference_answer
        assert mine.item.relevant_doc_ids == template.item.relevant_doc_ids
        if mine.item.extra["drafted_from"] == "generator":
            assert mine.item.question != template.item.question
            question, why = check_question(mine.item.question, mine.item.reference_answer or "")
            assert (question, why) == (mine.item.question, "ok")
        else:
            assert mine.item.question == template.item.question
    # Greedy decoding: the same chunks give the same questions.
    again = draft_golden_candidates(CHUNKS, max_items=3, question_drafter=drafter)
    assert [c.item.question for c in again.candidates] == [
        c.item.question for c in drafted.candidates
    ]
