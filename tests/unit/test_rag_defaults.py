"""The base bundle's defaults have one home (rag/defaults.py): the server with no champion, the
library's pipeline and answer functions and the evaluation read the same values."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest

from assets.evaluate import EvaluationConfig
from llmops_dagster.rag import answer as answer_module
from llmops_dagster.rag.defaults import (
    DEFAULT_K,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MODE,
    EVALUATION_MAX_NEW_TOKENS,
)
from llmops_dagster.rag.pipeline import RagPipeline, RetrievalSettings
from llmops_dagster.search.retriever import SearchMode

pytestmark = pytest.mark.unit


def test_the_default_mode_is_a_search_mode() -> None:
    assert SearchMode(DEFAULT_MODE) is SearchMode.HYBRID_RRF


def test_library_defaults_are_the_base_bundle() -> None:
    assert (RetrievalSettings().mode, RetrievalSettings().k) == (DEFAULT_MODE, DEFAULT_K)
    fields = RagPipeline.__dataclass_fields__
    assert fields["max_new_tokens"].default == DEFAULT_MAX_NEW_TOKENS
    for function in (answer_module.answer, answer_module.answer_many):
        parameters = inspect.signature(function).parameters
        assert parameters["k"].default == DEFAULT_K, function.__name__
        assert parameters["mode"].default == DEFAULT_MODE, function.__name__
        assert parameters["max_new_tokens"].default == DEFAULT_MAX_NEW_TOKENS, function.__name__


def test_evaluation_uses_the_base_k_and_mode_and_its_own_answer_budget() -> None:
    config = EvaluationConfig()
    assert (config.k, config.mode) == (DEFAULT_K, DEFAULT_MODE)
    assert config.max_new_tokens == EVALUATION_MAX_NEW_TOKENS < DEFAULT_MAX_NEW_TOKENS


def test_the_server_without_a_champion_answers_with_the_base_bundle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import llmops_dagster.resources as resources
    from llmops_dagster.serving.wiring import bundle_loader

    built: dict[str, Any] = {}

    def build_rag_pipeline(es: Any, models: Any, mlflow: Any, **kwargs: Any) -> Any:
        built.update(kwargs)
        return SimpleNamespace(retriever=SimpleNamespace(embedder=object()), generator=object())

    monkeypatch.setattr(resources, "build_rag_pipeline", build_rag_pipeline)
    stubs = {
        "elasticsearch": SimpleNamespace(alias="chunks"),
        "models": SimpleNamespace(embedding_model="minilm"),
        "mlflow": None,
    }
    served = bundle_loader(stubs)(None)
    assert served.version is None
    assert built["retrieval"] == RetrievalSettings(mode=DEFAULT_MODE, k=DEFAULT_K)
    assert built["max_new_tokens"] == DEFAULT_MAX_NEW_TOKENS


def test_the_evaluation_budget_is_the_p90_of_the_golden_references_in_generator_tokens() -> None:
    """The default answer budget is sized to the task by a stated rule, not picked: recomputed
    here from the shipped golden set and the default generator's own tokenizer."""
    from transformers import AutoTokenizer

    from llmops_dagster.config import Settings
    from llmops_dagster.evaluate.golden import load_golden, reference_token_budget
    from llmops_dagster.models.local import load_location
    from llmops_dagster.models.source import resolve_model_source

    settings = Settings()
    models = settings.models
    source = resolve_model_source(models.generator_model, models.generator_gguf_file)
    # Where the generator reads it: the converted copy set-up writes (0.7 s in the suite;
    # parsing the GGUF took 14.6 s), or the folder when there is no GGUF.
    tokenizer = AutoTokenizer.from_pretrained(load_location(settings.models_cache_dir, source))
    references = [i.reference_answer for i in load_golden().items if i.reference_answer]
    assert len(references) == 212
    assert reference_token_budget(tokenizer, references, 90.0) == EVALUATION_MAX_NEW_TOKENS == 26
