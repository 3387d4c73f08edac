"""Citation parsing, inferred citations and ``answer`` with fake retriever and generator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from llmops_dagster.models.base import Generation, Generator
from llmops_dagster.rag.answer import answer, answer_many, infer_citations
from llmops_dagster.rag.prompts import PromptTemplate, parse_citations

pytestmark = pytest.mark.unit

A = "2c464e4fddbe916df07495cdb9b568ad"
B = "96676a1f41982b58b4fc7772b58164d5"


@dataclass
class Hit:
    chunk_id: str
    doc_id: str
    text: str
    title: str
    score: float


HITS = [
    Hit(
        A,
        "fs:handbook/welcome.md",
        "The first paying delivery was flown on 9 September 2020.",
        "Welcome",
        0.9,
    ),
    Hit(
        B,
        "fs:handbook/leave.md",
        "Annual leave carried over must be used by 31 March.",
        "Leave",
        0.5,
    ),
]


class FakeRetriever:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def search(self, query: str, *, mode: str = "hybrid_rrf", k: int = 5) -> list[Hit]:
        self.calls.append((query, mode, k))
        return HITS[:k]


class FakeGenerator:
    model_id = "fake-model"

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies = list(replies)
        self.seen: list[object] = []

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    def generate(self, prompts, *, max_new_tokens: int = 256, temperature: float = 0.0):
        self.seen.extend(prompts)
        return [
            Generation(self.replies.pop(0), prompt_tokens=100, completion_tokens=7, seconds=0.25)
            for _ in prompts
        ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"It was 9 September 2020 [chunk:{A}].", [A]),
        (f"See [chunk: {B}] and [chunk:{A}] and again [chunk:{B}]", [B, A]),
        (f"Both [chunk:{A}, chunk:{B}]", [A, B]),
        (f"Truncated id [chunk:{A[:10]}]", [A]),  # unique prefix ≥ 8 chars
        ("Short prefix [chunk:2c46]", []),
        ("Made up [chunk:ffffffffffffffffffffffffffffffff]", []),
        ("No citations at all.", []),
        (f"[CHUNK:{A}]", [A]),
    ],
)
def test_parse_citations_keeps_only_retrieved_ids(text: str, expected: list[str]) -> None:
    assert parse_citations(text, [A, B]) == expected


def test_parse_citations_without_allowed_ids_returns_everything() -> None:
    assert parse_citations("[chunk:x1] [chunk:y2]") == ["x1", "y2"]


def test_infer_citations_picks_overlapping_chunks() -> None:
    assert infer_citations("The first paying delivery flew on 9 September 2020.", HITS) == [A]
    assert infer_citations("Nothing related here.", HITS) == []
    assert infer_citations("", HITS) == []
    assert infer_citations("31 March.", HITS) == [B]  # short answers need one word


def test_answer_records_citations_timings_tokens_and_prompt_version() -> None:
    retriever = FakeRetriever()
    generator = FakeGenerator([f"On 9 September 2020 [chunk:{A}]."])
    assert isinstance(generator, Generator)
    prompt = PromptTemplate.from_text("t", "[system]\nS\n[user]\n{{context}}\n{{question}}")
    result = answer(
        "When was the first delivery?",
        retriever=retriever,
        generator=generator,
        prompt=prompt,
        k=2,
        mode="bm25",
    )
    assert retriever.calls == [("When was the first delivery?", "bm25", 2)]
    assert result.cited_chunk_ids == [A] and not result.citations_inferred
    assert result.retrieved_ids == [A, B]
    assert result.contexts[0].startswith("The first paying delivery")
    assert (result.prompt_name, result.prompt_version) == ("t", prompt.version)
    assert result.model_id == "fake-model"
    assert (result.prompt_tokens, result.completion_tokens) == (100, 7)
    assert result.generate_ms == 250.0
    assert result.total_ms >= result.retrieve_ms + result.generate_ms
    assert len(result.answer_id) == 36
    # The generator got chat messages with fenced chunks.
    user = generator.seen[0][1]["content"]
    assert f'<chunk id="{A}">' in user
    assert result.to_dict()["cited_chunk_ids"] == [A]


def test_answer_falls_back_to_inferred_citations() -> None:
    generator = FakeGenerator(["Annual leave carried over must be used by 31 March."])
    result = answer("Leave?", retriever=FakeRetriever(), generator=generator)
    assert result.cited_chunk_ids == [B]
    assert result.citations_inferred


def test_answer_many_batches_generation() -> None:
    generator = FakeGenerator(["a", "b", "c"])
    results = answer_many(["q1", "q2", "q3"], retriever=FakeRetriever(), generator=generator)
    assert [r.text for r in results] == ["a", "b", "c"]
    assert len(generator.seen) == 3
    assert len({r.answer_id for r in results}) == 3


def test_empty_question_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty question"):
        answer("  ", retriever=FakeRetriever(), generator=FakeGenerator(["x"]))


def test_one_search_keeps_a_deeper_ranking_for_metrics_than_the_prompt_gets() -> None:
    retriever = FakeRetriever()
    generator = FakeGenerator(["It was 2020 [chunk:" + A + "]."])
    result = answer(
        "When was the first delivery?", retriever=retriever, generator=generator, k=1, depth=10
    )
    assert retriever.calls == [("When was the first delivery?", "hybrid_rrf", 10)]
    assert result.retrieved_ids == [A]  # the prompt got the top k
    assert [c.chunk_id for c in result.ranked] == [A, B]  # everything retrieved, in rank order
    assert result.ranked_doc_ids == ["fs:handbook/welcome.md", "fs:handbook/leave.md"]
    (prompt,) = generator.seen
    assert A in prompt[1]["content"] and B not in prompt[1]["content"]  # type: ignore[index]


def test_the_extractive_answerer_answers_without_a_prompt_or_tokens() -> None:
    from llmops_dagster.rag.extractive import ExtractiveAnswerer

    result = answer(
        "When was the first paying delivery flown?",
        retriever=FakeRetriever(),
        generator=ExtractiveAnswerer(max_sentences=1),
        k=2,
    )
    assert result.text == "The first paying delivery was flown on 9 September 2020."
    assert result.cited_chunk_ids == [A] and result.citations_inferred is False
    assert (result.prompt_tokens, result.completion_tokens, result.prompt_ms) == (0, 0, 0.0)
    assert result.model_id.startswith("extractive:v1")
