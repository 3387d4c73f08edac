"""A fine-tuned embedding model's shadow index, end to end on real services: the sample corpus
indexed in Elasticsearch, MLflow on SQLite, Dagster in process, the extractive answerer (no
generator model), kNN retrieval (so the embedding model decides what is found).

"Fine-tuned" models are made here, in the models store of the test's own models cache
(``<cache>/embedding/<name>/``), as copies of the configured all-MiniLM-L6-v2 with perturbed
weights: ``near-1``/``near-2`` (noise of 1e-4: the same retrieval under another model id) and
``worse`` (every weight replaced by noise of its own scale: a model made worse on purpose).
The ``embedding_finetune`` asset of the other branch is stood in for by an asset returning the
``FinetunedEmbedding`` value of such a folder.

The scenario runs in order (one module-scoped world): near-1's shadow is evaluated and promoted
— champion bundle and alias move together while a thread keeps searching → an answer served
afterwards embeds its query with near-1 (the trace names it) → near-2's shadow follows a
reindex that adds a document → a failed champion move puts the alias back, the retried move
promotes near-2 with its index, and a server still holding the old champion embeds its next
query with near-2 (its trace names near-2) → rollback restores both → the worse model is
refused, the alias never points at its index and retention drops it → an unknown ``index`` is
refused by name. Pruning never deletes a shadow (hand-made indices, no world).
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from elasticsearch import Elasticsearch
from mlflow.tracking import MlflowClient

from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_definitions
from llmops_dagster.embed.finetune import FinetunedEmbedding
from llmops_dagster.embed.model import canonical_model_id
from llmops_dagster.evaluate.gate import current_alias_version
from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL, load_bundle
from llmops_dagster.resources import build_resources
from llmops_dagster.search.aliases import (
    SHADOW_OF,
    current_index,
    list_versions,
    shadow_indices,
)
from llmops_dagster.search.mapping import index_meta
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import asset_metadata, drop_indices
from tests.support.settings import isolated_settings
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

GOLDEN_CASES = 30
QUESTION = "In which year was Northwind Drones founded?"
#: Both sides answer with the extractive answerer on kNN retrieval: only the index differs.
SHADOW_RUN = {
    "index": "shadow",
    "generator": "extractive",
    "mode": "knn",
    "require_improvement": False,
    "primary_margin": 0.1,
    "n_resamples": 1000,
}
#: A model made worse on purpose by real training: each query paired with another's passage,
#: at a learning rate a hundred times the default.
SHUFFLED_TRAINING = {
    "shuffled_pairs": True,
    "learning_rate": 3e-3,
    "max_steps": 6,
    "batch_size": 8,
    "max_pairs": 48,
}
NEW_DOC = "handbook/zeppelin-hangar.md"
NEW_TEXT = (
    "# Zeppelin hangar\n\nThe zeppelin hangar at Harrogate opened in 2024 and stores the "
    "quokka-class airships between test flights.\n"
)


@dataclass
class World:
    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance
    client: MlflowClient
    es: Elasticsearch
    corpus: Path
    alias: str
    base_id: str
    models: dict[str, str]  # name → model id

    def evaluate(self, **config: Any) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def("evaluate_candidate")
        return job.execute_in_process(
            run_config={"ops": {"rag_evaluation": {"config": config}}},
            instance=self.instance,
            raise_on_error=False,
        )

    def materialize(self, asset: str) -> dg.ExecuteInProcessResult:
        """One asset of the evaluation job (its input: the stored upstream output)."""
        job = self.defs.resolve_job_def("evaluate_candidate")
        return job.execute_in_process(
            instance=self.instance, asset_selection=[dg.AssetKey(asset)], raise_on_error=False
        )

    def reindex(self) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def("reindex").execute_in_process(instance=self.instance)
        assert result.success
        return result

    def build_shadow(self, name: str) -> dict[str, Any]:
        """``shadow_index`` materialized with ``embedding_finetune`` standing for model ``name``
        (the real asset comes from the embedding fine-tuning branch)."""
        from assets.shadow import shadow_index

        folder = self.settings.models_cache_dir / "embedding" / name
        value = FinetunedEmbedding(
            model_id=self.models[name],
            path=str(folder),
            base_model_id=self.base_id,
            registered_name="test-embedding",
            version="1",
            data_digest="",
            run_id="",
            examples=0,
            steps=0,
            seconds=0.0,
        )

        @dg.asset(name="embedding_finetune")
        def finetuned() -> FinetunedEmbedding:
            return value

        result = dg.materialize(
            [finetuned, shadow_index],
            instance=self.instance,
            resources=build_resources(self.settings, with_dlt=False),
        )
        assert result.success
        return asset_metadata(result, "shadow_index")

    def champion(self) -> str | None:
        return current_alias_version(self.client, DEFAULT_BUNDLE_MODEL, "champion")

    def live(self) -> str | None:
        return current_index(self.es, self.alias)


def _perturbed_copy(base: str, folder: Path, *, scale: float | None, seed: int) -> str:
    """Save ``base`` to ``folder`` with noise of ``1e-4`` (scale None: a near-equal model) or
    with every weight replaced by noise of ``scale`` x its own std (a model made worse)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(base, device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator)
            if scale is None:
                param.add_(noise * 1e-4)
            else:
                param.copy_(noise * scale * float(param.std() if param.numel() > 1 else 1.0))
    model.save(str(folder))
    return canonical_model_id(str(folder))


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
) -> Iterator[World]:
    home = tmp_path_factory.mktemp("shadow-home")
    corpus = home / "corpus"
    shutil.copytree(sample_dir, corpus)  # the sync test adds a document
    alias = f"shadow-{uuid.uuid4().hex[:8]}"
    golden = home / "golden-30.jsonl"
    lines = Settings().corpus.golden_path.read_text(encoding="utf-8").splitlines()
    golden.write_text("\n".join(lines[:GOLDEN_CASES]) + "\n", encoding="utf-8")
    previous_uri = mlflow.get_tracking_uri()
    settings = isolated_settings(
        home,
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias},
        corpus={"golden_path": golden},
        # A models cache of its own: the test's models store must not leak into the project's.
        models={"torch_threads": 1, "eval_torch_threads": 1, "cache_dir": home / "models"},
        serving={"bundle_poll_s": 3600.0},
    )
    base = settings.models.embedding_model
    store = settings.models_cache_dir / "embedding"
    models = {
        "near-1": _perturbed_copy(base, store / "near-1", scale=None, seed=1),
        "near-2": _perturbed_copy(base, store / "near-2", scale=None, seed=2),
        "worse": _perturbed_copy(base, store / "worse", scale=1.0, seed=3),
    }
    copy_embedding_cache(sample_embeddings, settings)
    defs = build_definitions(
        settings, SourcesConfig(filesystem=FilesystemSourceConfig(root=corpus))
    )
    instance = dg.DagsterInstance.ephemeral()
    world = World(
        settings,
        defs,
        instance,
        MlflowClient(settings.mlflow_uri),
        es_client,
        corpus,
        alias,
        canonical_model_id(base),
        models,
    )
    world.reindex()
    try:
        yield world
    finally:
        mlflow.set_tracking_uri(previous_uri)
        drop_indices(es_client, alias)


def _promoted(result: dg.ExecuteInProcessResult) -> dict[str, Any] | None:
    found = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "champion_model"
    ]
    return {k: v.value for k, v in found[0].materialization.metadata.items()} if found else None


def test_the_perturbed_models_differ_from_the_base_by_id_only_where_meant(world: World) -> None:
    ids = {world.base_id, *world.models.values()}
    assert len(ids) == 4  # four models, four ids: their vectors never share a cache key


def test_a_shadow_index_is_promoted_with_its_bundle_while_searches_never_fail(
    world: World,
) -> None:
    from llmops_dagster.rag.extractive import ExtractiveAnswerer
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.resources import build_rag_pipeline

    live_before = world.live()
    assert live_before is not None
    built = world.build_shadow("near-1")
    shadow = built["index"]
    assert built["model_id"] == world.models["near-1"] and built["shadow_of"] == world.alias
    assert built["count"] == world.es.count(index=world.alias)["count"]
    assert world.live() == live_before  # built beside the alias, which did not move
    assert shadow_indices(world.es, world.alias) == [shadow]

    # A served pipeline searching the alias through the whole evaluation and promotion.
    resources = build_resources(world.settings, with_dlt=False)
    pipeline = build_rag_pipeline(
        resources["elasticsearch"],
        resources["models"],
        generator=ExtractiveAnswerer(),
        retrieval=RetrievalSettings(mode="knn", k=3),
    )
    used: list[str] = []

    def record(encoder: Any) -> Any:
        used.append(encoder.model_id)
        return encoder

    pipeline.retriever.encoder_wrapper = record
    stop, errors, answered = threading.Event(), [], [0]

    def search() -> None:
        while not stop.is_set():
            try:
                assert pipeline.answer(QUESTION).retrieved
                answered[0] += 1
            except Exception as exc:  # every failure is the finding
                errors.append(exc)
            time.sleep(0.02)

    searcher = threading.Thread(target=search, daemon=True)
    searcher.start()
    try:
        result = world.evaluate(**SHADOW_RUN)
        time.sleep(0.5)  # a few searches after the move
    finally:
        stop.set()
        searcher.join(timeout=30)
    assert result.success
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["decision"] == "champion"
    assert evaluation["cases"] == GOLDEN_CASES
    assert evaluation["candidate_index"] == shadow
    assert evaluation["baseline_index"] == live_before
    assert evaluation["candidate_embedding_model"] == world.models["near-1"]
    assert evaluation["baseline"].endswith("(no champion yet)")
    promoted = _promoted(result)
    assert promoted is not None and promoted["promoted"] is True
    assert promoted["index_moved"] is True
    assert promoted["index"] == shadow and promoted["replaced_index"] == live_before
    # Both moved: the alias to the shadow, the champion to the bundle that names it.
    assert world.live() == shadow
    champion = load_bundle(world.client, f"models:/{DEFAULT_BUNDLE_MODEL}@champion")
    assert champion.version == world.champion() == evaluation["bundle_uri"].rsplit("/", 1)[1]
    assert champion.bundle.index_name == shadow
    assert champion.bundle.embedding_model_id == world.models["near-1"]
    assert champion.tags["index.replaced"] == live_before
    assert SHADOW_OF not in index_meta(world.es, shadow)  # an ordinary version now
    assert shadow_indices(world.es, world.alias) == []
    # The searches: none failed, each embedded with the model of the index it searched.
    assert errors == []
    assert answered[0] > 0
    assert set(used) == {world.base_id, world.models["near-1"]}
    assert used[-1] == world.models["near-1"]


def test_an_answer_served_after_promotion_embeds_the_query_with_the_new_model(
    world: World,
) -> None:
    from llmops_dagster.serving import trace_keys as keys
    from llmops_dagster.serving.wiring import build_service

    service = build_service(world.settings)
    try:
        assert service.holder.current.version is not None
        assert service.holder.current.version.version == world.champion()
        served = service.answer(QUESTION)
        service.tracer.flush()
        trace = world.client.get_trace(served.trace_id)
    finally:
        service.close()
    assert trace.info.trace_metadata[keys.EMBEDDING_MODEL] == world.models["near-1"]
    assert trace.info.trace_metadata[keys.INDEX_NAME] == world.live()
    (span,) = [s for s in trace.data.spans if s.name == "embed_query"]
    assert span.attributes["model_id"] == world.models["near-1"]


def test_a_reindex_keeps_a_shadow_index_in_sync(world: World) -> None:
    shadow = world.build_shadow("near-2")["index"]
    before = world.es.count(index=shadow)["count"]
    assert before == world.es.count(index=world.alias)["count"]
    (world.corpus / NEW_DOC).write_text(NEW_TEXT, encoding="utf-8")
    result = world.reindex()
    indexed = asset_metadata(result, "search_index")
    assert indexed["shadows"] == shadow
    assert indexed[f"shadow_indexed/{shadow}"] == 1
    assert indexed[f"shadow_deleted/{shadow}"] == 0
    assert indexed["shadow_errors"] == []
    assert indexed["model_id"] == world.models["near-1"]  # the live index's model, kept
    embedded = asset_metadata(result, "embeddings")
    assert embedded[f"embedded/{world.models['near-2']}"] == 1
    assert embedded[f"embedded/{world.models['near-1']}"] == 1
    world.es.indices.refresh(index=shadow)
    assert world.es.count(index=shadow)["count"] == before + 1
    assert world.es.count(index=world.alias)["count"] == before + 1
    found = world.es.search(
        index=shadow, query={"match": {"text": "quokka-class"}}, size=1, source=["model_id"]
    )["hits"]["hits"]
    assert len(found) == 1
    # The shadow's chunk carries its own model's vector (the shadow's _meta model).
    assert index_meta(world.es, shadow)["model_id"] == world.models["near-2"]


def test_a_failed_champion_move_points_the_alias_back_and_a_retry_promotes_both(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MLflow step is made to fail by a stand-in (the only fake here: a registry that
    fails on demand cannot be had otherwise); Elasticsearch and the decision are real."""
    from llmops_dagster.rag import promotion
    from llmops_dagster.serving import trace_keys as keys
    from llmops_dagster.serving.wiring import build_service

    v1, live_before = world.champion(), world.live()
    shadow = shadow_indices(world.es, world.alias)[-1]

    def registry_down(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("registry unavailable (injected)")

    monkeypatch.setattr(promotion, "promote_decided", registry_down)
    result = world.evaluate(**SHADOW_RUN)
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["decision"] == "champion"
    assert evaluation["baseline"] == f"champion models:/{DEFAULT_BUNDLE_MODEL}/{v1}"
    assert evaluation["baseline_index"] == live_before and evaluation["candidate_index"] == shadow
    assert _promoted(result) is None  # champion_model failed
    assert world.live() == live_before  # the alias was pointed back
    assert world.champion() == v1
    assert index_meta(world.es, shadow)[SHADOW_OF] == world.alias  # still a shadow

    monkeypatch.undo()
    # A server that still holds v1 (it has not polled since) when the retry moves both.
    service = build_service(world.settings)
    try:
        assert service.holder.current.version.version == v1
        retried = world.materialize("champion_model")
        assert retried.success
        promoted = _promoted(retried)
        assert promoted is not None and promoted["index"] == shadow
        assert promoted["replaced_index"] == live_before
        assert world.live() == shadow
        assert world.champion() == evaluation["bundle_uri"].rsplit("/", 1)[1]
        # v1's bundle records near-1, but its answer now searches near-2's index: the query is
        # embedded with near-2, and the trace says so.
        served = service.answer(QUESTION)
        assert served.bundle.version.version == v1
        service.tracer.flush()
        trace = world.client.get_trace(served.trace_id)
    finally:
        service.close()
    assert trace.info.trace_metadata[keys.EMBEDDING_MODEL] == world.models["near-2"]
    assert trace.info.trace_metadata[keys.INDEX_NAME] == shadow
    (span,) = [s for s in trace.data.spans if s.name == "embed_query"]
    assert span.attributes["model_id"] == world.models["near-2"]


def test_rollback_restores_the_champion_and_the_alias(world: World) -> None:
    from llmops_dagster.rag.promotion import rollback_with_index

    v2 = world.champion()
    v1 = load_bundle(world.client, f"models:/{DEFAULT_BUNDLE_MODEL}/{v2}").tags["previous_champion"]
    replaced = load_bundle(world.client, f"models:/{DEFAULT_BUNDLE_MODEL}/{v2}").tags[
        "index.replaced"
    ]
    promotion = rollback_with_index(world.client, world.es, world.alias)
    assert promotion.bundle.previous_version == v2 and promotion.bundle.new_version == v1
    assert promotion.index is not None and promotion.index.new_index == replaced
    assert world.champion() == v1
    assert world.live() == replaced
    assert index_meta(world.es, replaced)["model_id"] == world.models["near-1"]


def test_a_manually_approved_index_candidate_moves_the_alias_on_approval(world: World) -> None:
    """near-2's index, named explicitly (an ordinary version since its promotion and the
    rollback), evaluated with manual approval: the challenger alias moves, the search alias
    does not; `approve_with_index` then moves champion and alias together."""
    from llmops_dagster.rag.promotion import approve_with_index

    v1, live = world.champion(), world.live()
    (index,) = [
        name
        for name in list_versions(world.es, world.alias)
        if index_meta(world.es, name).get("model_id") == world.models["near-2"]
    ]
    result = world.evaluate(**{**SHADOW_RUN, "index": index, "approval": "manual"})
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["decision"] == "awaiting_approval"
    assert evaluation["candidate_index"] == index
    promoted = _promoted(result)
    assert promoted is not None and promoted["alias"] == "challenger"
    assert promoted["index_moved"] is False
    assert world.live() == live and world.champion() == v1
    version = evaluation["bundle_uri"].rsplit("/", 1)[1]
    approved = approve_with_index(
        world.client, world.es, world.alias, DEFAULT_BUNDLE_MODEL, version, approver="test"
    )
    assert approved.bundle.new_version == version and approved.bundle.previous_version == v1
    assert approved.index is not None and approved.index.previous_index == live
    assert world.live() == index and world.champion() == version


def test_a_model_made_worse_is_refused_and_its_shadow_index_dropped(world: World) -> None:
    champion, live = world.champion(), world.live()
    shadow = world.build_shadow("worse")["index"]
    # generator llm, no adapter registered in this world: with a champion, an index candidate
    # is the champion's (extractive) bundle, so the requested generator plays no part.
    result = world.evaluate(**{**SHADOW_RUN, "generator": "llm"})
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["decision"] == "refused"
    assert evaluation["candidate_index"] == shadow
    assert evaluation["candidate_embedding_model"] == world.models["worse"]
    assert evaluation["bundle"].startswith("extractive:v1 ")  # the champion's generator
    assert "floor failed: recall_at_5" in evaluation["decision_summary"]
    assert _promoted(result) is None  # the blocking gate stopped it
    assert evaluation["dropped_indices"] == [shadow]
    assert not world.es.indices.exists(index=shadow)
    assert world.live() == live and world.champion() == champion
    assert shadow_indices(world.es, world.alias) == []


def test_an_index_that_is_no_version_of_the_alias_is_refused_by_name(world: World) -> None:
    result = world.evaluate(**{**SHADOW_RUN, "index": "no-such-index"})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "index 'no-such-index': not 'live', 'shadow' nor a physical index of alias" in message
    assert world.alias in message


def test_pruning_old_versions_never_deletes_a_shadow_index(es_client: Elasticsearch) -> None:
    """Real Elasticsearch, hand-made indices: three complete old versions, one shadow, the
    live one; pruning to no kept version deletes the old ones and leaves the shadow."""
    from llmops_dagster.search.aliases import point_alias, prune_versions, version_index_name

    alias = f"prune-{uuid.uuid4().hex[:8]}"
    names = [version_index_name(alias) for _ in range(5)]
    try:
        for i, name in enumerate(names):
            meta: dict[str, Any] = {"built_at": f"2026-01-0{i + 1}", "model_id": "m"}
            if i == 3:
                meta.update({SHADOW_OF: alias, "model_id": "tuned"})
            es_client.indices.create(index=name, mappings={"_meta": meta})
        point_alias(es_client, alias, names[4])
        kept, deleted = prune_versions(es_client, alias, keep=0)
        assert (kept, deleted) == ([], names[:3])
        assert es_client.indices.exists(index=names[3])
        assert shadow_indices(es_client, alias) == [names[3]]
    finally:
        for name in names:
            es_client.indices.delete(index=name, ignore_unavailable=True)


def test_the_finetune_embedding_job_refuses_a_model_trained_on_shuffled_pairs(
    world: World,
) -> None:
    """The job as a user runs it — embedding_finetune (really trained, on shuffled pairs at a
    destructive learning rate: a model made worse on purpose) → shadow_index → rag_evaluation
    → champion_model: refused by the floor, the alias never on its index, the index dropped."""
    champion, live = world.champion(), world.live()
    job = world.defs.resolve_job_def("finetune_embedding")
    result = job.execute_in_process(
        run_config={
            "ops": {
                "embedding_finetune": {"config": SHUFFLED_TRAINING},
                "rag_evaluation": {"config": SHADOW_RUN},
            }
        },
        instance=world.instance,
        raise_on_error=False,
    )
    trained = asset_metadata(result, "embedding_finetune")
    assert trained["steps"] == SHUFFLED_TRAINING["max_steps"]
    shadow = asset_metadata(result, "shadow_index")
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["candidate_index"] == shadow["index"]
    assert evaluation["candidate_embedding_model"] == trained["model_id"]
    assert evaluation["decision"] == "refused"
    assert "floor failed: recall_at_5" in evaluation["decision_summary"]
    assert _promoted(result) is None
    assert evaluation["dropped_indices"] == [shadow["index"]]
    assert not world.es.indices.exists(index=shadow["index"])
    assert world.live() == live and world.champion() == champion


def test_an_index_candidate_that_requires_online_evidence_is_refused_before_answering(
    world: World,
) -> None:
    """A shadow index serves no traffic before promotion: asking for online evidence on it is a
    clear error, not a challenger that waits forever."""
    world.build_shadow("near-2")
    result = world.evaluate(**{**SHADOW_RUN, "min_online_answers": 5})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no online evidence can be gathered" in failure.event_specific_data.error.message
