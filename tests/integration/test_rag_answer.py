"""``answer`` on the real packaged SmolLM2 (a fake in-memory retriever stands in for ES), the
clear error for a bad model path, and — on the real Elasticsearch node — the metrics' ranking
filled to ``depth`` documents. (An unreachable OpenAI-compatible endpoint: test_models.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import Settings
from llmops_dagster.embed.model import Embedder, load_embedder
from llmops_dagster.models.base import GeneratorConfigError
from llmops_dagster.models.local import LocalTransformersGenerator, load_local_generator
from llmops_dagster.models.spec import LocalModelSpec
from llmops_dagster.rag.answer import answer, answer_many
from llmops_dagster.rag.prompts import load_prompt
from llmops_dagster.train.dataset import load_corpus_passages
from tests.support.search import index_document
from tests.support.stubs import StubRetriever, hit

pytestmark = pytest.mark.integration


def _spec(**changes: object) -> LocalModelSpec:
    # The default LLMOPS_HOME: its converted-safetensors cache is shared by every test. One
    # torch thread: on a shared 2-core box two OpenMP threads stall each other (5x slower).
    settings = Settings()
    spec = LocalModelSpec(
        model=settings.models.generator_model,
        gguf_file=settings.models.generator_gguf_file,
        cache_dir=settings.models_cache_dir,
        threads=1,
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def generator() -> LocalTransformersGenerator:
    return load_local_generator(_spec())


@pytest.fixture(scope="module")
def retriever() -> StubRetriever:
    """Two chunks of the sample corpus' welcome page, whatever the query."""
    passages = load_corpus_passages(Settings().corpus.sample_data_dir, max_words=80)
    # The passage that holds the founding story, and one that does not.
    welcome = sorted(passages["fs:handbook/welcome.md"], key=lambda p: "founded" not in p.text)[:2]
    assert "2019" in welcome[0].text
    return StubRetriever(
        [hit(p.chunk_id, p.doc_id, p.text, p.title, 1.0 / (i + 1)) for i, p in enumerate(welcome)]
    )


def test_answer_cites_retrieved_chunks_with_timings_and_tokens(
    generator: LocalTransformersGenerator, retriever: StubRetriever
) -> None:
    prompt = load_prompt()
    result = answer(
        "In which year was Northwind Drones founded?",
        retriever=retriever,
        generator=generator,
        prompt=prompt,
        k=2,
        max_new_tokens=24,
    )
    retrieved = [h.chunk_id for h in retriever.hits]
    assert result.text.strip()
    assert result.retrieved_ids == retrieved
    assert result.cited_chunk_ids, result.text
    assert set(result.cited_chunk_ids) <= set(retrieved)
    assert result.prompt_version == prompt.version and result.prompt_name == "rag_answer"
    assert result.model_id == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert result.prompt_tokens > 100  # system text + two fenced chunks
    assert 0 < result.completion_tokens <= 24
    assert result.generate_ms > 0 and result.retrieve_ms >= 0
    assert result.total_ms >= result.generate_ms


def test_batched_answers_match_single_answers(
    generator: LocalTransformersGenerator, retriever: StubRetriever
) -> None:
    questions = ["Where did Northwind start?", "Who founded Northwind?"]
    batched = answer_many(
        questions, retriever=retriever, generator=generator, k=1, max_new_tokens=12
    )
    single = answer(questions[1], retriever=retriever, generator=generator, k=1, max_new_tokens=12)
    assert [a.question for a in batched] == questions
    # Left padding + attention mask: batching does not change a greedy answer.
    assert batched[1].text == single.text
    assert batched[1].prompt_tokens == single.prompt_tokens


def test_unknown_model_path_names_the_setting() -> None:
    with pytest.raises(GeneratorConfigError, match="LLMOPS_GENERATOR_MODEL=/does/not/exist"):
        load_local_generator(_spec(model="/does/not/exist"))


def test_uncached_hub_id_offline_names_the_setting() -> None:
    with pytest.raises(GeneratorConfigError, match="LLMOPS_GENERATOR_MODEL"):
        load_local_generator(_spec(model="no-such-org/no-such-model-xyz", gguf_file=None))


# --- depth in documents, on a real index -----------------------------------------------------
DEPTH_QUERY = "drone delivery battery range"


def _depth_corpus(embedder: Embedder) -> list[dict]:
    """4 documents of 6 chunks each about drone deliveries (they fill any top 10), then 8
    one-chunk documents that mention a delivery once (so every mode can reach them)."""
    rows: list[tuple[str, int, str]] = []
    for d in range(4):
        for j in range(6):
            rows.append(
                (
                    f"fs:routes/route-{d}.md",
                    j,
                    f"Route {d} part {j}: the delivery drone battery gives {20 + j} km of range "
                    f"on drone delivery route {d}.",
                )
            )
    others = ["bakery flour", "office chairs", "garden seeds", "library books"]
    others += ["coffee beans", "printer paper", "bicycle tyres", "winter coats"]
    for i, topic in enumerate(others):
        rows.append((f"fs:misc/{i}.md", 0, f"The {topic} delivery arrives on Monday {i}."))
    vectors = embedder.encode([text for _, _, text in rows])
    return [
        index_document(doc_id, position, text, vector, model_id=embedder.model_id)
        for (doc_id, position, text), vector in zip(rows, vectors, strict=True)
    ]


@pytest.fixture(scope="module")
def depth_index(es_settings: Settings, es_client: Elasticsearch) -> Iterator[tuple[str, Embedder]]:
    import uuid

    from llmops_dagster.search.aliases import alias_indices, list_versions, rebuild
    from llmops_dagster.search.mapping import IndexSpec, build_index_body

    embedder = load_embedder(es_settings.models.embedding_model)
    docs = _depth_corpus(embedder)
    spec = IndexSpec(dims=embedder.dims, model_id=embedder.model_id)
    body = build_index_body(spec, client=es_client)
    alias = f"test-depth-{uuid.uuid4().hex[:10]}"
    rebuild(es_client, alias, docs, len(docs), body, smoke_query_vector=docs[0]["embedding"])
    yield alias, embedder
    for name in sorted(set(list_versions(es_client, alias)) | set(alias_indices(es_client, alias))):
        es_client.indices.delete(index=name, ignore_unavailable=True)


@pytest.mark.parametrize("mode", ["bm25", "knn", "hybrid_rrf"])
def test_ranking_holds_depth_documents_and_the_prompt_chunks_of_the_first_search(
    mode: str, depth_index: tuple[str, Embedder], es_client: Elasticsearch
) -> None:
    """On a real index the top 10 chunks come from the 4 route documents; the ranking kept for
    metrics is filled to 10 documents while the prompt's 3 chunks stay those of the first
    search (the search of max(k, depth) = 10 chunks that serving makes too)."""
    from llmops_dagster.rag.extractive import ExtractiveAnswerer
    from llmops_dagster.search.retriever import HybridRetriever

    alias, embedder = depth_index
    retriever = HybridRetriever(es_client, alias, embedder)
    first = retriever.search(DEPTH_QUERY, mode=mode, k=10)
    assert {h.doc_id for h in first} <= {f"fs:routes/route-{d}.md" for d in range(4)}
    (result,) = answer_many(
        [DEPTH_QUERY], retriever=retriever, generator=ExtractiveAnswerer(), k=3, mode=mode, depth=10
    )
    assert len(dict.fromkeys(result.ranked_doc_ids)) == 10
    assert [c.chunk_id for c in result.ranked[:10]] == [h.chunk_id for h in first]
    assert result.retrieved_ids == [h.chunk_id for h in first[:3]]
