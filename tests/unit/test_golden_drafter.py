"""Generator-drafted golden questions: what a draft must pass (one question, about the
sentence, not a restatement, not another question again), the prompt, and how
``draft_golden_candidates`` uses a question drafter (the sample only; ids, answers and documents
stay the template draft's; fallbacks counted). The real model: tests/integration/
test_golden_generator_drafts.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest

from llmops_dagster.evaluate.golden_candidates import draft_golden_candidates
from llmops_dagster.evaluate.golden_drafter import (
    DraftRequest,
    GeneratorDrafts,
    check_question,
    draft_with_generator,
    extract_question,
    question_messages,
)
from llmops_dagster.models.base import Generation
from llmops_dagster.train.raft import ChunkRecord

pytestmark = pytest.mark.unit

SENTENCE = "Claims must be submitted in Ledgerly within 30 days of the purchase."


def test_the_first_question_of_the_reply_is_cut_after_its_question_mark() -> None:
    assert extract_question('Question: "Where are claims submitted? In Ledgerly."\nMore?') == (
        "Where are claims submitted?"
    )
    assert extract_question("Claims go to Ledgerly.") is None


def test_a_question_about_the_sentence_passes_capitalised() -> None:
    assert check_question("within how many days must claims reach ledgerly?", SENTENCE) == (
        "Within how many days must claims reach ledgerly?",
        "ok",
    )


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Claims must be submitted in Ledgerly.", "no question mark"),
        ("What is the maximum amount of money you can spend?",
         "shares fewer than 2 content words with the sentence"),
        ("Claims must be submitted in Ledgerly within 30 days of the purchase?",
         "restates the sentence"),
        ("Why " + "claims Ledgerly " * 20 + "?", "longer than 40 words"),
    ],
)  # fmt: skip
def test_a_draft_that_asks_nothing_drifts_or_restates_is_refused(reply: str, reason: str) -> None:
    assert check_question(reply, SENTENCE) == (None, reason)


def test_a_draft_restating_a_golden_or_earlier_question_is_refused() -> None:
    others = [{"claims", "submitted", "ledgerly", "days"}]
    question = "How many days do claims take to be submitted in Ledgerly?"
    assert check_question(question, SENTENCE, others=others) == (
        None,
        "restates a golden or another candidate's question",
    )


def test_the_prompt_names_the_document_and_the_sentence() -> None:
    system, user = question_messages("Claims  go\nto Ledgerly.", " Expenses ")
    assert system["role"] == "system" and "one short question" in system["content"]
    assert user == {
        "role": "user",
        "content": "Document: Expenses\nSentence: Claims go to Ledgerly.\nQuestion:",
    }


CHUNKS = [
    ChunkRecord(f"c{n}", f"fs:doc{n}.md", f"Doc {n}",
                f"Team {n} submits expense claims in Ledgerly within {n + 10} days of purchase.")
    for n in range(5)
]  # fmt: skip


def test_the_drafter_rewrites_only_the_sample_and_keeps_ids_answers_and_documents() -> None:
    templates = draft_golden_candidates(CHUNKS, max_items=3, seed=1)
    asked: list[DraftRequest] = []

    def drafter(requests: Sequence[DraftRequest]) -> GeneratorDrafts:
        asked.extend(requests)
        # The first request gets a written question; the others fall back to the template.
        questions = ["Which tool takes the claims?"] + [r.template_question for r in requests[1:]]
        flags = [True] + [False] * (len(requests) - 1)
        return GeneratorDrafts(questions, flags, Counter({"no question mark": len(requests) - 1}))

    drafted = draft_golden_candidates(CHUNKS, max_items=3, seed=1, question_drafter=drafter)
    assert len(asked) == 3  # the sample of 3, not the 5 chunks
    assert [r.template_question for r in asked] == [c.item.question for c in templates.candidates]
    assert [c.id for c in drafted.candidates] == [c.id for c in templates.candidates]
    before, after = templates.candidates, drafted.candidates
    assert [c.item.reference_answer for c in after] == [c.item.reference_answer for c in before]
    assert [c.item.relevant_doc_ids for c in after] == [c.item.relevant_doc_ids for c in before]
    assert after[0].item.question == "Which tool takes the claims?"
    assert [c.item.extra["drafted_from"] for c in after] == ["generator", "templates", "templates"]
    assert [c.item.question for c in after[1:]] == [c.item.question for c in before[1:]]
    assert drafted.metadata()["n_generator_drafts"] == 1
    assert drafted.metadata()["n_template_fallbacks"] == 2
    assert "n_generator_drafts" not in templates.metadata()  # templates only: no such counts


class _ScriptedGenerator:
    """Replies from a list, in order: the drafter's bookkeeping is the unit under test (the
    real model: tests/integration/test_golden_generator_drafts.py)."""

    model_id = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies

    def generate(self, prompts: Sequence[object], **kwargs: object) -> list[Generation]:
        return [Generation(reply, 0, 0, 0.0) for reply in self.replies[: len(prompts)]]


def test_the_drafter_keeps_every_reply_as_it_came_accepted_or_refused() -> None:
    replies = ["Where are claims submitted within 30 days?\nMore text", "What is the answer?"]
    requests = [DraftRequest(SENTENCE, "Expenses", "Template one?")] * 2
    drafts = draft_with_generator(requests, _ScriptedGenerator(replies))
    assert drafts.replies == replies
    assert drafts.from_generator == [True, False]
    assert drafts.questions == ["Where are claims submitted within 30 days?", "Template one?"]
    assert drafts.fallback_reasons == Counter(
        {"shares fewer than 2 content words with the sentence": 1}
    )
