"""Settings → a ready :class:`~llmops_dagster.serving.service.AnswerService` (the same resources
the code location and the CLI use, so the server answers exactly like ``ask`` and evaluation)."""

from __future__ import annotations

import logging
from typing import Any

from llmops_dagster.config import Settings
from llmops_dagster.rag.bundle import (
    CHALLENGER,
    DEFAULT_BUNDLE_MODEL,
    BundleVersion,
    current_alias_bundle,
    current_champion,
)
from llmops_dagster.serving.answer_cache import AnswerCache
from llmops_dagster.serving.answer_log import ServingStore
from llmops_dagster.serving.bundles import BundleHolder, ServedBundle
from llmops_dagster.serving.pricing import PriceTable
from llmops_dagster.serving.rollout import RolloutPlan
from llmops_dagster.serving.service import AnswerService
from llmops_dagster.serving.tracing import AnswerTracer, TraceContext, TracedEncoder

log = logging.getLogger(__name__)

#: The challenger holder's bundle while there is no challenger alias (nothing loaded).
NO_CHALLENGER = ServedBundle(
    pipeline=None, version=None, context=TraceContext("", "", "", "", "", "", ""), local=True
)


def bundle_loader(resources: dict[str, Any]) -> Any:
    from llmops_dagster.models.openai_client import OpenAICompatibleGenerator
    from llmops_dagster.rag.defaults import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODE
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.resources import build_bundle_pipeline, build_rag_pipeline

    es, models, mlflow = resources["elasticsearch"], resources["models"], resources["mlflow"]

    def load(version: BundleVersion | None) -> ServedBundle:
        if version is None:
            # The base bundle (rag/defaults.py): what `ask --bundle base` answers with too.
            pipeline = build_rag_pipeline(
                es,
                models,
                mlflow,
                retrieval=RetrievalSettings(mode=DEFAULT_MODE, k=DEFAULT_K),
                max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
            )
            context = TraceContext("", "", "", "", es.alias, "", models.embedding_model)
        else:
            bundle = version.bundle
            pipeline = build_bundle_pipeline(es, models, mlflow, bundle, bundle_uri=version.uri)
            context = TraceContext(
                bundle_uri=version.uri,
                bundle_version=version.version,
                prompt_uri=bundle.prompt_uri,
                adapter_uri=bundle.adapter_uri or "",
                index_alias=bundle.index_alias,
                index_name=bundle.index_name,
                embedding_model_id=bundle.embedding_model_id,
            )
        # Each served pipeline gets its own retriever; wrapping its embedder adds the
        # embed_query span without touching the shared (cached) model. The retriever embeds
        # with the model of the index it searches (after a promotion: the new model), so the
        # span names the encoder actually used, not the bundle's record.
        retriever = pipeline.retriever
        retriever.embedder = TracedEncoder(retriever.embedder, context.embedding_model_id)
        retriever.encoder_wrapper = lambda encoder: TracedEncoder(
            encoder, str(getattr(encoder, "model_id", "") or context.embedding_model_id)
        )
        local = not isinstance(pipeline.generator, OpenAICompatibleGenerator)
        log.info("loaded %s", version.uri if version else "the base model (no champion yet)")
        return ServedBundle(pipeline=pipeline, version=version, context=context, local=local)

    return load


class IndexModels:
    """physical index → the embedding model its ``_meta`` records (read once per index: an
    index never changes model). What the trace context names as the embedding model."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._found: dict[str, str] = {}

    def __call__(self, index: str) -> str | None:
        from llmops_dagster.search.mapping import index_meta

        if index not in self._found:
            model = index_meta(self.client, index).get("model_id")
            if not model:
                return None
            self._found[index] = str(model)
        return self._found[index]


def build_service(settings: Settings) -> AnswerService:
    from llmops_dagster.resources import build_resources
    from llmops_dagster.search.aliases import current_index
    from llmops_dagster.search.client import check_cluster

    resources = build_resources(settings, with_dlt=False, resolve_secrets=True)
    es, mlflow_resource = resources["elasticsearch"], resources["mlflow"]
    client = es.get_client()
    check_cluster(client, es.cluster_spec())
    store = mlflow_resource.store()  # creates the tracking store / experiment if needed
    registry = mlflow_resource.client()
    holder = BundleHolder(
        lambda: current_champion(registry, DEFAULT_BUNDLE_MODEL),
        bundle_loader(resources),
        poll_s=settings.serving.bundle_poll_s,
    )
    holder.refresh()
    holder.start()
    rollout = RolloutPlan(settings.serving.rollout, settings.serving.challenger_share)
    challenger = None
    if rollout.needs_challenger:
        # No challenger alias: nothing to load, the champion answers everyone.
        load = bundle_loader(resources)
        challenger = BundleHolder(
            lambda: current_alias_bundle(registry, DEFAULT_BUNDLE_MODEL, CHALLENGER),
            lambda version: load(version) if version is not None else NO_CHALLENGER,
            poll_s=settings.serving.bundle_poll_s,
        )
        challenger.refresh()
        challenger.start()
    tracer = AnswerTracer(store.tracking_uri, settings.serving.trace_experiment)

    def es_health() -> str:
        health = client.cluster.health(request_timeout=5)
        if health["status"] == "red":
            raise RuntimeError("cluster health is red")
        return f"{health['status']} ({health['number_of_nodes']} nodes)"

    def tracking_health() -> str:
        registry.search_experiments(max_results=1)
        return store.tracking_uri.split("://", 1)[0] + " store reachable"

    return AnswerService(
        holder=holder,
        tracer=tracer,
        store=ServingStore(settings.serving_store_path),
        prices=PriceTable.load(settings.serving.price_table),
        index_name=lambda: current_index(client, es.alias),
        index_model=IndexModels(client),
        health_checks={"elasticsearch": es_health, "tracking_store": tracking_health},
        max_concurrent_generations=settings.serving.max_concurrent_generations,
        max_question_chars=settings.serving.max_question_chars,
        max_waiting=settings.serving.max_waiting,
        queue_timeout_s=settings.serving.queue_timeout_s,
        injection_policy=settings.serving.injection_policy,
        min_relevance=settings.serving.min_relevance,
        answer_cache=AnswerCache(
            settings.serving.answer_cache_entries, settings.serving.answer_cache_ttl_s
        ),
        challenger=challenger,
        rollout=rollout,
    )


def build_app(settings: Settings) -> Any:
    """The FastAPI app ``llmops-dagster serve`` runs: service, API keys, rate limit."""
    from llmops_dagster.guardrails.ratelimit import RateLimiter
    from llmops_dagster.serving.app import create_app
    from llmops_dagster.serving.auth import KeyStore

    serving = settings.serving
    keys = KeyStore(serving.api_keys_path)  # fails fast on a missing or malformed file
    limiter = RateLimiter(
        rate_per_s=serving.rate_limit_per_minute / 60, burst=serving.rate_limit_burst
    )
    return create_app(build_service(settings), keys, limiter)
