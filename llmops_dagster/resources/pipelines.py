"""The RAG pipeline factories: the one way to wire a retriever, an embedder, a prompt and a
generator from the resources — as configured, or exactly as a RAG bundle pins them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmops_dagster.models.base import Generator
    from llmops_dagster.rag.bundle import RagBundle
    from llmops_dagster.rag.extractive import ExtractiveAnswerer
    from llmops_dagster.rag.pipeline import RagPipeline, RetrievalSettings
    from llmops_dagster.rag.prompts import PromptTemplate
    from llmops_dagster.resources.elasticsearch import ElasticsearchResource
    from llmops_dagster.resources.mlflow import MlflowResource
    from llmops_dagster.resources.models import ModelsResource


def build_rag_pipeline(
    elasticsearch: ElasticsearchResource,
    models: ModelsResource,
    mlflow: MlflowResource | None = None,
    *,
    adapter_uri: str | None = None,
    retrieval: RetrievalSettings | None = None,
    max_new_tokens: int | None = None,
    generator: Generator | ExtractiveAnswerer | None = None,
    prompt: PromptTemplate | None = None,
    bundle_uri: str | None = None,
    temperature: float | None = None,
    index: str | None = None,
) -> RagPipeline:
    """The one way to wire a RAG: the index alias's retriever (``index``: one physical index
    instead), queries embedded by the model of the index searched (its ``_meta.model_id``:
    the configured model, or a fine-tuned one from the models store), the prompt (the repo's
    template unless given) and the configured generator (base, or base + ``adapter_uri``)."""
    from llmops_dagster.rag.defaults import DEFAULT_MAX_NEW_TOKENS
    from llmops_dagster.rag.pipeline import RagPipeline, RetrievalSettings
    from llmops_dagster.rag.prompts import load_prompt
    from llmops_dagster.search.retriever import HybridRetriever

    retriever = HybridRetriever(
        elasticsearch.get_client(),
        index or elasticsearch.alias,
        models.embedder(),
        embedder_for=models.embedder_for,
    )
    if generator is None:
        tracking_uri = mlflow.store().tracking_uri if mlflow is not None else None
        generator = models.generator(adapter_uri=adapter_uri, tracking_uri=tracking_uri)
    return RagPipeline(
        retriever=retriever,
        generator=generator,
        prompt=prompt or load_prompt(),
        retrieval=retrieval or RetrievalSettings(),
        max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        temperature=models.generator_temperature if temperature is None else temperature,
        bundle_uri=bundle_uri,
    )


def build_bundle_pipeline(
    elasticsearch: ElasticsearchResource,
    models: ModelsResource,
    mlflow: MlflowResource,
    bundle: RagBundle,
    *,
    bundle_uri: str | None = None,
    recorded_tags: Mapping[str, str] | None = None,
    on_bundle_index: bool = False,
) -> RagPipeline:
    """The pipeline a RAG bundle describes — exactly its prompt version (from MLflow's prompt
    registry), retriever settings, generator (its pinned backend, model and weights, adapter
    version and decoding; or the extractive answerer) and answer length — on the alias it was
    evaluated on. Serving and evaluation both use this, so what passed the comparison is what
    answers. A generator this process cannot reproduce is a :class:`GeneratorConfigError`,
    never a stand-in. ``recorded_tags``: the bundle version's tags (where its generator was
    loaded from when it was evaluated). ``on_bundle_index``: search the physical index the
    bundle names (an evaluation: a shadow index is no alias's yet) instead of the alias
    (serving: syncs and rebuilds keep moving the alias's physical index)."""
    import json

    from llmops_dagster.models.base import GeneratorConfigError
    from llmops_dagster.rag.bundle import TAG_GENERATOR_LOCATION
    from llmops_dagster.rag.extractive import ExtractiveAnswerer
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.rag.prompt_registry import require_prompt_hash

    if bundle.index_alias != elasticsearch.alias:
        raise GeneratorConfigError(
            f"bundle {bundle_uri or bundle.key()} was evaluated on the alias "
            f"{bundle.index_alias!r}, but the elasticsearch resource serves "
            f"{elasticsearch.alias!r} (LLMOPS_ES_INDEX_ALIAS)"
        )
    registered = require_prompt_hash(mlflow.client(), bundle.prompt_uri, bundle.prompt_version)
    generator: Generator | ExtractiveAnswerer
    if bundle.generator == "extractive":
        generator = ExtractiveAnswerer()
        if generator.model_id != bundle.base_model_id:
            raise GeneratorConfigError(
                f"bundle {bundle_uri or bundle.key()} was evaluated with {bundle.base_model_id}; "
                f"this code's extractive answerer is {generator.model_id}: evaluate a new bundle"
            )
    else:
        location = (recorded_tags or {}).get(TAG_GENERATOR_LOCATION)
        generator = models.pinned_generator(
            bundle.generator_pin,
            adapter_uri=bundle.adapter_uri,
            tracking_uri=mlflow.store().tracking_uri,
            recorded_location=json.loads(location) if location else None,
        )
    return build_rag_pipeline(
        elasticsearch,
        models,
        mlflow,
        retrieval=RetrievalSettings(
            mode=bundle.retrieval_mode, k=bundle.retrieval_k, metrics_depth=bundle.metrics_depth
        ),
        max_new_tokens=bundle.max_new_tokens,
        temperature=bundle.temperature,
        generator=generator,
        prompt=registered.template,
        bundle_uri=bundle_uri,
        index=bundle.index_name if on_bundle_index else None,
    )
