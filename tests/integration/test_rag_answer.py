"""``answer`` on the real packaged SmolLM2 (a fake in-memory retriever stands in for ES), and
the clear errors for a bad model path or an unreachable OpenAI-compatible endpoint."""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace

import pytest

from llmops_dagster.config import Settings
from llmops_dagster.models.base import EndpointUnavailable, GeneratorConfigError
from llmops_dagster.models.local import LocalTransformersGenerator, load_local_generator
from llmops_dagster.models.openai_client import OpenAICompatibleGenerator
from llmops_dagster.models.spec import LocalModelSpec, OpenAIEndpointSpec
from llmops_dagster.rag.answer import answer, answer_many
from llmops_dagster.rag.prompts import load_prompt
from llmops_dagster.train.dataset import load_corpus_passages

pytestmark = pytest.mark.integration


@dataclass
class Hit:
    chunk_id: str
    doc_id: str
    text: str
    title: str
    score: float


class InMemoryRetriever:
    """Two chunks of the sample corpus' welcome page, whatever the query."""

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits

    def search(self, query: str, *, mode: str = "hybrid_rrf", k: int = 5) -> list[Hit]:
        return self.hits[:k]


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
def retriever() -> InMemoryRetriever:
    passages = load_corpus_passages(Settings().corpus.sample_data_dir, max_words=80)
    # The passage that holds the founding story, and one that does not.
    welcome = sorted(passages["fs:handbook/welcome.md"], key=lambda p: "founded" not in p.text)[:2]
    assert "2019" in welcome[0].text
    return InMemoryRetriever(
        [Hit(p.chunk_id, p.doc_id, p.text, p.title, 1.0 / (i + 1)) for i, p in enumerate(welcome)]
    )


def test_answer_cites_retrieved_chunks_with_timings_and_tokens(
    generator: LocalTransformersGenerator, retriever: InMemoryRetriever
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
    generator: LocalTransformersGenerator, retriever: InMemoryRetriever
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


def test_unreachable_endpoint_is_a_clear_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gen = OpenAICompatibleGenerator(
        OpenAIEndpointSpec(
            base_url=f"http://127.0.0.1:{port}/v1", model="any", timeout_s=2, max_retries=0
        )
    )
    with pytest.raises(EndpointUnavailable, match=rf"127\.0\.0\.1:{port}/v1 is unreachable"):
        gen.generate(["hello"], max_new_tokens=4)
