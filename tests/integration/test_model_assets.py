"""The whole graph on the sample corpus, through the fine-tune: a registered, traceable adapter.

Tracking here is the at-scale configuration (deploy/mlflow-server.sh): an ``mlflow server``
process on a PostgreSQL backend store with proxied artifacts, reached over http:// by the
assets, the registry, the prompt registry and the lineage walker. MLflow on SQLite stays
covered by the other graph tests (test_champion_challenger, test_rag_bundles, ...).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from elasticsearch import Elasticsearch
from mlflow.tracking import MlflowClient

from jobs import WHOLE_GRAPH_SELECTION
from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_asset_checks, build_assets, build_resources
from llmops_dagster.evaluate.gate import current_alias_version
from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL, load_bundle
from llmops_dagster.resources import build_bundle_pipeline
from llmops_dagster.services.postgres_local import LocalPostgres, create_database
from llmops_dagster.serving.testbed import start_mlflow_server, stop_process
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from llmops_dagster.tracking.trace import trace
from tests.conftest import asset_metadata, drop_indices
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

SHORT_TRAINING = {
    "ops": {
        # A handful of drafted RAFT items beside the 60 hand-written ones keeps the run short.
        "finetune_dataset": {"config": {"drafted_items": 8}},
        # One recipe, no search: the search (candidates, child runs, the winner trained) is
        # test_lora_finetune's; here it would add two candidate trainings (~40 s).
        "lora_adapter": {
            "config": {
                "max_steps": 2,
                "batch_size": 2,
                "max_seq_len": 256,
                "recipe_search": False,
            }
        },
        # Four cases keep the test short; below min_cases that needs the recorded override.
        "rag_evaluation": {"config": {"limit": 4, "max_new_tokens": 24, "allow_few_cases": True}},
    }
}
# The gate is what this run checks, not the answers: four tokens miss an exact match anyway.
IMPOSSIBLE_GATE = {
    "ops": {
        "rag_evaluation": {
            "config": {
                "limit": 2,
                "max_new_tokens": 4,
                "allow_few_cases": True,
                "minimums": {"exact_match": 0.99},
            }
        }
    }
}


def test_graph_trains_evaluates_gates_and_traces(
    tmp_settings: Settings,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
    postgres: LocalPostgres,
    tmp_path: Path,
) -> None:
    alias = f"model-{uuid.uuid4().hex[:8]}"
    database = f"mlflow_{uuid.uuid4().hex[:8]}"
    create_database(postgres, database)
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed: psycopg2.
    server, tracking_uri = start_mlflow_server(
        tmp_path / "mlflow-server",
        backend_store_uri=postgres.url(database, driver="postgresql+psycopg2"),
    )
    copy_embedding_cache(sample_embeddings, tmp_settings)  # the graph's embeddings: cached
    try:
        _run_graph(tmp_settings, es_settings, es_client, sample_dir, alias, tracking_uri)
    finally:
        stop_process(server)
    # Everything went through the server into PostgreSQL (not a stray local store): the adapter
    # and bundle models, exactly one bundle alias (the refused candidate moved none), and the
    # artifacts the server proxied into its own folder.
    with psycopg2.connect(postgres.dsn(database)) as con, con.cursor() as cur:
        cur.execute("SELECT name FROM registered_models")
        names = {row[0] for row in cur.fetchall()}
        cur.execute(
            "SELECT alias FROM registered_model_aliases WHERE name = %s", (DEFAULT_BUNDLE_MODEL,)
        )
        aliases = [row[0] for row in cur.fetchall()]
    con.close()
    assert {tmp_settings.models.adapter_model_name, DEFAULT_BUNDLE_MODEL} <= names
    assert len(aliases) == 1 and aliases[0] in ("champion", "challenger")
    assert any((tmp_path / "mlflow-server" / "artifacts").rglob("adapter_config.json"))


def _run_graph(
    tmp_settings: Settings,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    alias: str,
    tracking_uri: str,
) -> None:
    settings = tmp_settings.override(
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias},
        mlflow={"tracking_uri": tracking_uri},
        models={"torch_threads": 1},
    )
    assert settings.mlflow_uri.startswith("http://")
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=sample_dir))
    instance = dg.DagsterInstance.ephemeral()
    assets = [*build_assets(settings, sources), *build_asset_checks()]
    try:
        # The whole graph as the demo runs it: every asset but the daily partitions.
        result = dg.materialize(
            assets, resources=build_resources(settings), instance=instance,
            run_config=SHORT_TRAINING, selection=WHOLE_GRAPH_SELECTION,
        )  # fmt: skip
        assert result.success
        dataset = asset_metadata(result, "finetune_dataset")
        adapter = asset_metadata(result, "lora_adapter")
        index = asset_metadata(result, "search_index")
        assert (dataset["n_handwritten"], dataset["n_drafted"]) == (60, 8)
        assert dataset["n_train"] + dataset["n_validation"] == 60 + 8
        assert adapter["steps"] == 2
        assert adapter["dataset_digest"] == dataset["digest"]
        assert adapter["index_version"] == index["index"]

        client = MlflowClient(settings.mlflow_uri)
        version = client.get_model_version(
            settings.models.adapter_model_name, adapter["model_version"]
        )
        assert version.tags["llmops.dataset_digest"] == dataset["digest"]
        assert version.tags["llmops.index_version"] == index["index"]
        assert version.run_id == adapter["mlflow_run_id"]
        run_tags = client.get_run(version.run_id).data.tags
        assert run_tags["upstream.finetune_dataset"] == dataset["mlflow_run_id"]
        assert run_tags["dagster.run_id"] == result.run_id
        # The floors held on the sample corpus, so the bundle got an alias: `champion` when it
        # beat the base model on the paired comparison, `challenger` otherwise.
        evaluation = asset_metadata(result, "rag_evaluation")
        assert evaluation["cases"] == 4 and evaluation["baseline"] == "base model (no champion yet)"
        assert evaluation["overrides"] == ["allow_few_cases: 4 < 30 cases"]
        adapter_uri = f"models:/{settings.models.adapter_model_name}/{adapter['model_version']}"
        assert evaluation["model_uri"] == adapter_uri
        assert evaluation["decision"] in ("champion", "challenger")
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks["quality_gate"] is True
        assert checks["champion_comparison"] is (evaluation["decision"] == "champion")
        moved = asset_metadata(result, "champion_model")
        assert moved["alias"] == evaluation["decision"]
        bundle = load_bundle(client, f"models:/{DEFAULT_BUNDLE_MODEL}@{moved['alias']}")
        assert bundle.uri == evaluation["bundle_uri"] and bundle.bundle.adapter_uri == adapter_uri
        assert bundle.bundle.index_name == index["index"]

        # The champion traces back, link by link, to the golden set, dlt loads and the code.
        chain = trace(client, evaluation["mlflow_run_id"])
        assert chain.complete
        nodes = chain.by_asset()
        facts = nodes["rag_evaluation"].facts
        assert facts["model.uri"] == adapter_uri
        assert facts["index.name"] == index["index"]
        assert facts["golden.digest"] and facts["prompt.version"] == bundle.bundle.prompt_uri
        assert set(nodes) == {
            "ingest_fs",
            "rag_evaluation",
            "lora_adapter",
            "finetune_dataset",
            "search_index",
            "embeddings",
            "chunks",
            "documents",
        }
        assert nodes["search_index"].facts["index.name"] == index["index"]
        assert (
            nodes["search_index"].facts["chunk_set.digest"]
            == nodes["chunks"].facts["chunk_set.digest"]
        )
        assert "fs_files" in nodes["documents"].facts["dlt.load_ids"]
        load_ids = nodes["ingest_fs"].facts["dlt.load_ids"]
        assert load_ids and load_ids.split(",")[0] in nodes["documents"].facts["dlt.load_ids"]
        assert {n.code_version for n in chain.nodes} == {nodes["documents"].code_version}

        # Serving the champion: an answer that cites chunks the live index really holds.
        resources = build_resources(settings, resolve_secrets=True)
        pipeline = build_bundle_pipeline(
            resources["elasticsearch"],
            resources["models"],
            resources["mlflow"],
            bundle.bundle,
            bundle_uri=bundle.uri,
        )
        answered = pipeline.answer("How many days' notice does annual leave need?")
        assert answered.text.strip()
        # A 135M model rarely cites by itself; citations are then inferred from overlap and may
        # be empty, but never name a chunk that was not retrieved from the live index.
        assert len(answered.retrieved_ids) == 3
        assert set(answered.cited_chunk_ids) <= set(answered.retrieved_ids)
        for chunk_id in answered.retrieved_ids:
            assert es_client.exists(index=alias, id=chunk_id)
        assert answered.prompt_tokens > 0 and answered.completion_tokens > 0
        assert answered.retrieve_ms > 0 and answered.generate_ms > 0
        assert "+lora" in answered.model_id

        # A candidate that misses the floors is refused: the check fails with the shortfall and
        # no alias moves.
        aliases_before = {
            a: current_alias_version(client, DEFAULT_BUNDLE_MODEL, a)
            for a in ("champion", "challenger")
        }
        failed = dg.materialize(
            assets,
            selection=["rag_evaluation", "champion_model"],
            resources=build_resources(settings),
            instance=instance,
            run_config=IMPOSSIBLE_GATE,
            raise_on_error=False,
        )
        (gate_check,) = [
            c for c in failed.get_asset_check_evaluations() if c.check_name == "quality_gate"
        ]
        assert gate_check.passed is False
        assert "exact_match" in gate_check.metadata["summary"].value
        assert "short by" in gate_check.metadata["summary"].value
        assert not [
            e
            for e in failed.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "champion_model"
        ]
        assert {
            a: current_alias_version(client, DEFAULT_BUNDLE_MODEL, a)
            for a in ("champion", "challenger")
        } == aliases_before
        assert asset_metadata(failed, "rag_evaluation")["decision"] == "refused"
    finally:
        drop_indices(es_client, alias)
