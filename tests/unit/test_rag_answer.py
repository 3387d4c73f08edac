"""Citation parsing, inferred citations and ``answer`` with fake retriever and generator."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from llmops_dagster.models.base import Generation, Generator
from llmops_dagster.rag.answer import answer, answer_many, infer_citations
from llmops_dagster.rag.prompts import PromptTemplate, parse_citations
from tests.support.stubs import StubRetriever, hit

pytestmark = pytest.mark.unit

A = "2c464e4fddbe916df07495cdb9b568ad"
B = "96676a1f41982b58b4fc7772b58164d5"


HITS = [
    hit(
        A,
        "fs:handbook/welcome.md",
        "The first paying delivery was flown on 9 September 2020.",
        "Welcome",
        0.9,
    ),
    hit(
        B,
        "fs:handbook/leave.md",
        "Annual leave carried over must be used by 31 March.",
        "Leave",
        0.5,
    ),
]


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
    retriever = StubRetriever(HITS)
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
    result = answer("Leave?", retriever=StubRetriever(HITS), generator=generator)
    assert result.cited_chunk_ids == [B]
    assert result.citations_inferred


def test_answer_many_batches_generation() -> None:
    generator = FakeGenerator(["a", "b", "c"])
    results = answer_many(["q1", "q2", "q3"], retriever=StubRetriever(HITS), generator=generator)
    assert [r.text for r in results] == ["a", "b", "c"]
    assert len(generator.seen) == 3
    assert len({r.answer_id for r in results}) == 3


def test_empty_question_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty question"):
        answer("  ", retriever=StubRetriever(HITS), generator=FakeGenerator(["x"]))


def test_one_search_keeps_a_deeper_ranking_for_metrics_than_the_prompt_gets() -> None:
    retriever = StubRetriever(HITS)
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
        retriever=StubRetriever(HITS),
        generator=ExtractiveAnswerer(max_sentences=1),
        k=2,
    )
    assert result.text == "The first paying delivery was flown on 9 September 2020."
    assert result.cited_chunk_ids == [A] and result.citations_inferred is False
    assert (result.prompt_tokens, result.completion_tokens, result.prompt_ms) == (0, 0, 0.0)
    assert result.model_id.startswith("extractive:v1")


class ChunkedIndex(StubRetriever):
    """A fake retriever over 40 chunks of 12 documents: the top 10 chunks come from 4
    documents (3 + 3 + 2 + 2 chunks), the documents after that have 1 chunk each, then more.

    ``reorder_deeper``: a search deeper than 10 returns the top in another order, as an
    approximate kNN search with more candidates may."""

    def __init__(self, *, reorder_deeper: bool = False, size: int = 40) -> None:
        docs = ["d0"] * 3 + ["d1"] * 3 + ["d2"] * 2 + ["d3"] * 2
        docs += [f"d{i}" for i in range(4, 12)] + ["d0"] * (size - 18)
        super().__init__(
            [
                hit(f"c{i:02d}", doc, f"text {i} of {doc}", doc, 1.0 - i / 100)
                for i, doc in enumerate(docs[:size])
            ]
        )
        self.reorder_deeper = reorder_deeper

    def search(self, query: str, *, mode: str = "hybrid_rrf", k: int = 5, **access: object):
        hits = super().search(query, mode=mode, k=k, **access)
        if self.reorder_deeper and k > 10:
            hits = [hits[1], hits[0], *hits[2:]]
        return hits


def _answer(retriever: ChunkedIndex, **kwargs: object):
    generator = FakeGenerator(["It was 2020."])
    result = answer("q?", retriever=retriever, generator=generator, **kwargs)  # type: ignore[arg-type]
    return result, generator


def test_depth_counts_documents_the_ranking_is_fetched_deeper_until_10_documents() -> None:
    """The first 10 chunks hold 4 documents: the old single search kept them, so nDCG@10 was
    computed over 4 documents. Now a deeper search (20 chunks) fills the ranking up to the
    chunk that brings the 10th document, and the prompt's k chunks stay those of the first."""
    retriever = ChunkedIndex(reorder_deeper=True)
    result, generator = _answer(retriever, k=3, depth=10)
    assert retriever.ks == [10, 20]
    ranked = [c.chunk_id for c in result.ranked]
    # The first ranking unchanged (c00, c01, … even though the deeper search swapped c00/c01),
    # then the first chunk of each new document up to the 10th distinct document.
    assert ranked == [f"c{i:02d}" for i in range(16)]
    assert len(dict.fromkeys(result.ranked_doc_ids)) == 10
    assert result.retrieved_ids == ["c00", "c01", "c02"]
    (prompt,) = generator.seen
    assert "c00" in prompt[1]["content"] and "c03" not in prompt[1]["content"]  # type: ignore[index]


def test_fill_stops_when_the_index_runs_out() -> None:
    retriever = ChunkedIndex(size=14)  # 14 chunks of 8 documents in all
    result, _ = _answer(retriever, k=3, depth=10)
    assert retriever.ks == [10, 20]  # 14 < 20 asked: nothing more to fetch
    assert [c.chunk_id for c in result.ranked] == [f"c{i:02d}" for i in range(14)]
    short = ChunkedIndex(size=6)
    result, _ = _answer(short, k=3, depth=10)
    assert short.ks == [10]  # the first search was not full: the index has no more


def test_no_deeper_search_when_the_first_holds_enough_documents() -> None:
    retriever = ChunkedIndex()
    _answer(retriever, k=10, depth=4)  # 10 chunks, 4 documents
    assert retriever.ks == [10]
    retriever = StubRetriever(HITS)  # 2 chunks of 2 documents, depth 2
    answer("q?", retriever=retriever, generator=FakeGenerator(["x"]), k=1, depth=2)
    assert retriever.calls == [("q?", "hybrid_rrf", 2)]


def test_deepening_doubles_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import llmops_dagster.rag.ranking as ranking_module

    monkeypatch.setattr(ranking_module, "MAX_RANKING_CHUNKS", 30)
    retriever = ChunkedIndex(size=40)
    docs = ["same"] * 40
    retriever.hits = [hit(f"c{i:02d}", d, "t", d, 1.0) for i, d in enumerate(docs)]
    result, _ = _answer(retriever, k=3, depth=10)
    assert retriever.ks == [10, 20, 30]
    assert len(result.ranked) == 10  # one document: nothing new to append
    assert "holds 1 of 10 documents after 30 chunks" in caplog.text


def test_serving_answers_skip_the_deeper_fetch_with_the_same_prompt_chunks() -> None:
    from llmops_dagster.rag.pipeline import RagPipeline, RetrievalSettings

    prompt = PromptTemplate.from_text("t", "[system]\nS\n[user]\n{{context}}\n{{question}}")
    retriever = ChunkedIndex(reorder_deeper=True)
    pipeline = RagPipeline(
        retriever=retriever,
        generator=FakeGenerator(["a", "b"]),
        prompt=prompt,
        retrieval=RetrievalSettings(mode="knn", k=3, metrics_depth=10),
    )
    served = pipeline.answer("q?")
    assert retriever.ks == [10]
    evaluated = pipeline.answer_many(["q?"])[0]
    assert retriever.ks == [10, 10, 20]
    assert served.retrieved_ids == evaluated.retrieved_ids == ["c00", "c01", "c02"]
    assert [h.chunk_id for h in pipeline.context("q?")] == ["c00", "c01", "c02"]
    assert retriever.ks[-1] == 10  # the context searches as deep as answering does


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"k": 0}, "retrieval k must be a positive integer, got 0"),
        ({"metrics_depth": 0}, "retrieval metrics_depth must be a positive integer, got 0"),
        ({"metrics_depth": "10"}, "retrieval metrics_depth must be a positive integer"),
        ({"mode": ""}, "retrieval mode must be a non-empty string"),
    ],
)
def test_retrieval_settings_reject_bad_values(settings: dict, message: str) -> None:
    from llmops_dagster.rag.pipeline import RetrievalSettings

    with pytest.raises(ValueError, match=message):
        RetrievalSettings(**settings)


def test_evaluation_refuses_a_ranking_shallower_than_its_deepest_metric() -> None:
    from llmops_dagster.evaluate.bundle_eval import evaluate_pipeline
    from llmops_dagster.evaluate.golden import GoldenSet
    from llmops_dagster.evaluate.metrics import MRR, NDCGAtK, RecallAtK
    from llmops_dagster.qa import QAItem
    from llmops_dagster.rag.pipeline import RagPipeline, RetrievalSettings

    retriever = ChunkedIndex()
    pipeline = RagPipeline(
        retriever=retriever,
        generator=FakeGenerator(["a"]),
        prompt=PromptTemplate.from_text("t", "[system]\nS\n[user]\n{{context}}\n{{question}}"),
        retrieval=RetrievalSettings(k=3, metrics_depth=5),
    )
    item = QAItem("q1", "q?", relevant_doc_ids=("d0",), reference_answer="a")
    golden = GoldenSet.from_items([item], name="g")
    with pytest.raises(
        ValueError,
        match=r"metrics_depth 5 is shallower than the deepest retrieval metric "
        r"\(mrr_at_10, ndcg_at_10: 10 documents\): set metrics_depth >= 10",
    ):
        evaluate_pipeline(pipeline, golden, metrics=[RecallAtK(5), MRR(10), NDCGAtK(10)])
    assert retriever.ks == []  # refused before answering anything
    result = evaluate_pipeline(pipeline, golden, metrics=[RecallAtK(5)])  # 5 is deep enough
    assert result.rows[0]["recall_at_5"] == 1.0
