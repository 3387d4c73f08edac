"""Champion/challenger on RAG bundles, end to end on real services: the sample corpus indexed in
Elasticsearch, the MLflow registry and prompt registry on SQLite, the packaged SmolLM2.

The scenario runs in order (one module-scoped world): the extractive bundle beats the base
model and becomes champion → refusals (too few cases, no thresholds) → a degraded adapter,
found by the registry sensor, stays challenger → a non-inferior bundle with another retriever
setting is promoted and rolled back with the CLI → a decision against a champion that has
since been replaced is refused as stale → two evaluations at once end with a champion
compared with the one it replaced → `ask` serves exactly the champion bundle.

The world's golden set is the first 30 questions of the project's (as many as ``min_cases``
asks for): evaluations run exactly as the sensors request them, with no test-only overrides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch
from mlflow.tracking import MlflowClient

from jobs.sensors import mlflow_registry_sensor
from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_definitions
from llmops_dagster.evaluate.gate import current_alias_version
from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL, load_bundle
from llmops_dagster.resources import build_resources
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import asset_metadata, drop_indices
from tests.support.settings import isolated_settings
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

GOLDEN_CASES = 30
#: LoRA scale of the "passes the floors, loses the comparison" adapter (random weights).
MILD_ALPHA = 4
FAST = {"max_new_tokens": 8, "n_resamples": 1000}


@dataclass
class World:
    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance
    client: MlflowClient
    registry_cursor: str | None = None

    def evaluate(self, **config: object) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def("evaluate_candidate")
        return job.execute_in_process(
            run_config={"ops": {"rag_evaluation": {"config": config}}},
            instance=self.instance,
            raise_on_error=False,
        )

    def materialize(self, asset: str, **config: object) -> dg.ExecuteInProcessResult:
        """One asset of the evaluation job (its input from the stored upstream output)."""
        job = self.defs.resolve_job_def("evaluate_candidate")
        run_config = {"ops": {"rag_evaluation": {"config": config}}} if config else {}
        return job.execute_in_process(
            run_config=run_config,
            instance=self.instance,
            asset_selection=[dg.AssetKey(asset)],
            raise_on_error=False,
        )

    def champion(self) -> str | None:
        return current_alias_version(self.client, DEFAULT_BUNDLE_MODEL, "champion")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
):
    home = tmp_path_factory.mktemp("cc-home")
    alias = f"cc-{uuid.uuid4().hex[:8]}"
    golden = home / "golden-30.jsonl"
    lines = Settings().corpus.golden_path.read_text(encoding="utf-8").splitlines()
    golden.write_text("\n".join(lines[:GOLDEN_CASES]) + "\n", encoding="utf-8")
    settings = isolated_settings(
        home,
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias},
        corpus={"golden_path": golden},
        # Serving on one thread (its default on two cores); evaluations on every core, as
        # shipped: one runs at a time and Elasticsearch idles while the model answers.
        models={"torch_threads": 1},
    )
    copy_embedding_cache(sample_embeddings, settings)
    defs = build_definitions(
        settings, SourcesConfig(filesystem=FilesystemSourceConfig(root=sample_dir))
    )
    instance = dg.DagsterInstance.ephemeral()
    indexed = defs.resolve_job_def("reindex").execute_in_process(instance=instance)
    assert indexed.success
    client = MlflowClient(settings.mlflow_uri)
    yield World(settings, defs, instance, client)
    drop_indices(es_client, alias)


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    (found,) = [c for c in result.get_asset_check_evaluations() if c.check_name == name]
    return found


def _champion_moved(result: dg.ExecuteInProcessResult) -> bool:
    return any(
        e.asset_key.to_user_string() == "champion_model"
        for e in result.get_asset_materialization_events()
    )


def test_extractive_bundle_beats_the_base_model_and_becomes_champion(world: World) -> None:
    result = world.evaluate(generator="extractive", **FAST)
    assert result.success
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["baseline"] == "base model (no champion yet)"
    assert evaluation["decision"] == "champion"
    assert evaluation["cases"] == 30
    assert evaluation["diff/token_f1"] > 0
    table = evaluation["comparison"]
    assert "| token_f1 | 30 |" in table and "| recall_at_5 | 30 |" in table
    champion = load_bundle(world.client, f"models:/{DEFAULT_BUNDLE_MODEL}@champion")
    assert champion.uri == evaluation["bundle_uri"]
    assert champion.bundle.generator == "extractive" and champion.bundle.retrieval_k == 3
    assert champion.bundle.prompt_uri.startswith("prompts:/rag_answer/")
    assert champion.tags["previous_champion"] == ""
    run = world.client.get_run(evaluation["mlflow_run_id"])
    assert run.data.metrics["compare.token_f1.ci_low"] > 0  # the interval excludes no gain
    assert run.data.tags["decision.outcome"] == "champion"
    assert _check(result, "champion_comparison").passed is True
    # Nothing was recorded before: both sides answered, and their answers are in this run.
    for side in ("candidate", "baseline"):
        assert evaluation[f"answers_generated/{side}"] == GOLDEN_CASES
        assert evaluation[f"answers_reused/{side}"] == 0
        assert evaluation[f"answers_from/{side}"] == evaluation["mlflow_run_id"]


def _case_rows(world: World, run_id: str, artifact: str) -> list[tuple[str, str, float]]:
    """(case id, answer, token F1) of a per-case table an evaluation run logged."""
    from llmops_dagster.evaluate.triggers import read_table_artifact

    path = Path(world.client.download_artifacts(run_id, artifact))
    return [(r["case_id"], r["actual_output"], r["token_f1"]) for r in read_table_artifact(path)]


def test_the_base_model_and_the_champion_are_not_answered_again(world: World) -> None:
    """The base model (now the candidate) and the extractive champion on the same golden set,
    index and code as the first evaluation: both sides are scored on the answers it recorded,
    none is generated, and the scores are those of the same answers."""
    from llmops_dagster.evaluate.bundle_eval import BASELINE_TABLE_ARTIFACT
    from llmops_dagster.evaluate.tracking import TABLE_ARTIFACT

    first_run = load_bundle(world.client, f"models:/{DEFAULT_BUNDLE_MODEL}@champion").run_id
    result = world.evaluate(generator="llm", model_version="base", **FAST)
    assert result.success
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["baseline"].startswith("champion models:/")
    for side in ("candidate", "baseline"):
        assert evaluation[f"answers_generated/{side}"] == 0
        assert evaluation[f"answers_reused/{side}"] == GOLDEN_CASES
        assert evaluation[f"answers_from/{side}"] == first_run
    run = evaluation["mlflow_run_id"]
    assert world.client.list_artifacts(run, "answers") == []  # nothing new to record
    # The base model's answers, scored again: the same answers and scores, case by case.
    then = _case_rows(world, first_run, BASELINE_TABLE_ARTIFACT)
    assert len(then) == GOLDEN_CASES
    assert _case_rows(world, run, TABLE_ARTIFACT) == then
    assert _case_rows(world, run, BASELINE_TABLE_ARTIFACT) == _case_rows(
        world, first_run, TABLE_ARTIFACT
    )
    assert evaluation["decision"] != "champion"  # the base model still loses to the champion


def test_the_index_version_follows_what_the_physical_index_holds(es_client: Elasticsearch) -> None:
    """Answers are keyed on the index's content, not its name: an incremental sync rewrites a
    chunk's text or audience, or deletes one, under the same name."""
    from llmops_dagster.evaluate.answer_key import index_version
    from llmops_dagster.evaluate.answer_reuse import es_chunk_texts

    index = f"version-probe-{uuid.uuid4().hex[:8]}"
    es_client.indices.create(
        index=index,
        mappings={
            "_meta": {"model_id": "m", "dims": 3},
            "properties": {
                "text": {"type": "text"},
                "content_hash": {"type": "keyword"},
                "allowed_groups": {"type": "keyword"},
            },
        },
        settings={"number_of_replicas": 0},
    )

    def put(chunk_id: str, text: str, groups: list[str]) -> None:
        source = {"text": text, "content_hash": f"h-{text}", "allowed_groups": groups}
        es_client.index(index=index, id=chunk_id, document=source, refresh=True)

    try:
        put("c1", "claims within 30 days", ["public"])
        put("c2", "salary bands", ["hr"])
        version = index_version(es_client, index)
        assert version.startswith("sha256:") and index_version(es_client, index) == version
        put("c2", "salary bands", ["hr", "finance"])  # an audience change
        assert index_version(es_client, index) != version
        put("c2", "salary bands", ["hr"])
        assert index_version(es_client, index) == version
        put("c1", "claims within 60 days", ["public"])  # a text change
        changed = index_version(es_client, index)
        assert changed != version
        es_client.delete(index=index, id="c2", refresh=True)
        assert index_version(es_client, index) not in (version, changed)
        texts = es_chunk_texts(es_client, index)(["c1", "c2"])
        assert texts == {"c1": "claims within 60 days"}  # a missing chunk is left out
    finally:
        es_client.indices.delete(index=index, ignore_unavailable=True)


def test_too_few_cases_or_no_thresholds_are_refused_unless_overridden(world: World) -> None:
    """Against the extractive champion (another extractive candidate: no model to run), so that
    the gate alone decides; nothing moves the champion."""
    champion_before = world.champion()
    assert champion_before is not None
    few = world.evaluate(generator="extractive", limit=5, max_new_tokens=16)
    gate = _check(few, "quality_gate")
    assert gate.passed is False
    assert "too few cases: 5 < 30 cases (min_cases)" in gate.metadata["summary"].value
    assert not _champion_moved(few) and world.champion() == champion_before

    none = world.evaluate(generator="extractive", limit=5, minimums={}, allow_few_cases=True)
    summary = _check(none, "quality_gate").metadata["summary"].value
    assert "no thresholds: a gate without thresholds passes anything" in summary
    assert world.champion() == champion_before

    # Manual approval: a non-inferior candidate on five cases would be promoted, so it waits
    # for a person instead of moving the champion.
    overridden = world.evaluate(
        generator="extractive",
        limit=5,
        allow_few_cases=True,
        approval="manual",
        require_improvement=False,
        primary_margin=0.1,
    )
    evaluation = asset_metadata(overridden, "rag_evaluation")
    assert evaluation["overrides"] == ["allow_few_cases: 5 < 30 cases"]
    run = world.client.get_run(evaluation["mlflow_run_id"])
    assert run.data.tags["decision.override.0"] == "allow_few_cases: 5 < 30 cases"
    assert _check(overridden, "quality_gate").passed is True
    assert evaluation["decision"] == "awaiting_approval", evaluation["decision_summary"]
    assert world.champion() == champion_before


def _degraded_adapter(world: World, *, lora_alpha: int, seed: int) -> str:
    """A LoRA adapter with random weights (what a broken fine-tune produces), registered like a
    trained one — the registry sensor sees a new version and asks for its evaluation.
    ``lora_alpha`` scales the damage: 64 garbles every answer, a small one only blurs them."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llmops_dagster.models.local import base_fingerprint
    from llmops_dagster.models.registry import (
        TAG_BASE_FINGERPRINT,
        TAG_BASE_MODEL_ID,
        register_adapter_version,
    )
    from llmops_dagster.tracking.mlflow_store import ensure_mlflow
    from llmops_dagster.tracking.runs import open_run

    models = build_resources(world.settings, with_dlt=False)["models"]
    base = models.base_model(fresh=True)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=8, lora_alpha=lora_alpha, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base.model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base.source.model_id
    folder = world.settings.home / f"degraded-adapter-{lora_alpha}-{seed}"
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)
    store = ensure_mlflow(world.settings.mlflow_uri, world.settings.mlflow.experiment)
    with open_run(store, run_name="degraded", tags={}, ui_url="http://127.0.0.1:5000") as run:
        run.client.log_artifacts(run.run_id, str(folder), "adapter")
        tags = {
            TAG_BASE_MODEL_ID: base.source.model_id,
            TAG_BASE_FINGERPRINT: base_fingerprint(base.model),
        }
        return register_adapter_version(
            run.client,
            world.settings.models.adapter_model_name,
            source=f"{run.artifact_uri}/adapter",
            run_id=run.run_id,
            tags=tags,
        )


def _registry_requests(world: World) -> list[dg.RunRequest]:
    """One tick of the registry sensor, continuing from the world's last cursor."""
    resources = build_resources(world.settings, with_dlt=False)
    with dg.build_sensor_context(
        instance=world.instance,
        cursor=world.registry_cursor,
        resources={"models": resources["models"], "mlflow": resources["mlflow"]},
    ) as context:
        requests = [r for r in mlflow_registry_sensor(context) if isinstance(r, dg.RunRequest)]
        world.registry_cursor = context.cursor
    return requests


def test_a_broken_adapter_found_by_the_sensor_is_refused_by_the_floor(world: World) -> None:
    champion_before = world.champion()
    assert champion_before is not None
    version = _degraded_adapter(world, lora_alpha=64, seed=0)
    (request,) = _registry_requests(world)
    config = request.run_config["ops"]["rag_evaluation"]["config"]
    assert config == {"model_version": version}
    # One chunk in the prompt: random LoRA weights garble any answer, and the model's time goes
    # into reading the prompt (the ranking the retrieval floors read is as deep as ever).
    result = world.evaluate(**config, k=1, **FAST)
    evaluation = asset_metadata(result, "rag_evaluation")
    # Random LoRA weights garble the answers: the floor refuses it outright.
    assert evaluation["decision"] == "refused"
    assert "floor failed: token_f1" in evaluation["decision_summary"]
    assert (
        evaluation["model_uri"] == f"models:/{world.settings.models.adapter_model_name}/{version}"
    )
    assert evaluation["diff/token_f1"] < 0
    assert _check(result, "quality_gate").passed is False
    comparison = _check(result, "champion_comparison")
    assert comparison.passed is False
    table = comparison.metadata["comparison"].value
    assert "| token_f1 | 30 |" in table  # the regression and its interval are attached
    assert not _champion_moved(result)
    assert world.champion() == champion_before
    run = world.client.get_run(evaluation["mlflow_run_id"])
    assert run.data.metrics["compare.token_f1.ci_high"] < 0  # significantly worse


def test_a_degraded_adapter_that_passes_the_floors_loses_and_stays_challenger(
    world: World,
) -> None:
    """Exactly the run the registry sensor asks for — no test-only setting — of an adapter that
    is worse than the champion but clears every floor: the comparison alone keeps it out."""
    champion_before = world.champion()
    version = _degraded_adapter(world, lora_alpha=MILD_ALPHA, seed=1)
    (request,) = _registry_requests(world)
    config = request.run_config["ops"]["rag_evaluation"]["config"]
    assert config == {"model_version": version}
    result = world.evaluate(**config)
    assert result.success
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["decision"] == "challenger", evaluation["decision_summary"]
    assert evaluation["cases"] == GOLDEN_CASES
    assert _check(result, "quality_gate").passed is True  # every floor held
    assert _check(result, "champion_comparison").passed is False
    assert "regression vs champion" in evaluation["decision_summary"]
    assert evaluation["baseline_version"] == champion_before
    run = world.client.get_run(evaluation["mlflow_run_id"])
    assert run.data.metrics["compare.token_f1.ci_high"] < 0  # significantly worse
    moved = asset_metadata(result, "champion_model")
    assert (moved["alias"], moved["promoted"], moved["compared_with"]) == (
        "challenger",
        False,
        champion_before,
    )
    bundle_version = evaluation["bundle_uri"].rsplit("/", 1)[1]
    assert current_alias_version(world.client, DEFAULT_BUNDLE_MODEL, "challenger") == bundle_version
    assert world.champion() == champion_before


def _env(world: World) -> dict[str, str]:
    """The world's settings as the environment of the CLI or a separate Dagster process."""
    return {
        **os.environ,
        "LLMOPS_HOME": str(world.settings.home),
        "MLFLOW_TRACKING_URI": world.settings.mlflow_uri,
        "ELASTICSEARCH_URL": str(world.settings.elasticsearch.url),
        "LLMOPS_ES_INDEX_ALIAS": world.settings.elasticsearch.index_alias,
        "LLMOPS_DUCKDB_PATH": str(world.settings.duckdb_path),
        "LLMOPS_GOLDEN": str(world.settings.corpus.golden_path),
        "LLMOPS_TORCH_THREADS": "1",
        "LLMOPS_EVAL_TORCH_THREADS": "1",
        "LLMOPS_MODELS_CACHE": str(world.settings.models_cache_dir),
    }


@dataclass
class _Ran:
    returncode: int
    stdout: str
    stderr: str


def _cli(world: World, *args: str) -> _Ran:
    """``llmops-dagster ARGS`` with the world's settings as its environment, in this process
    (click's runner): the same commands and exit codes as a shell's, without an interpreter
    start and MLflow import per call."""
    from click.testing import CliRunner

    from llmops_dagster.cli import main

    result = CliRunner(env=_env(world)).invoke(main, list(args))
    return _Ran(result.exit_code, result.stdout, result.stderr)


def test_non_inferior_bundle_is_promoted_and_the_cli_rolls_it_back(world: World) -> None:
    first = world.champion()
    # Another retriever setting, promoted on non-inferiority (no improvement required).
    result = world.evaluate(
        generator="extractive", k=5, require_improvement=False, primary_margin=0.1, **FAST
    )
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["decision"] == "champion", evaluation["decision_summary"]
    second = world.champion()
    assert second != first and evaluation["bundle_uri"].endswith(f"/{second}")
    promoted = load_bundle(world.client, f"models:/{DEFAULT_BUNDLE_MODEL}/{second}")
    assert promoted.tags["previous_champion"] == first and promoted.bundle.retrieval_k == 5

    rolled = _cli(world, "bundle", "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.strip() == f"champion: v{second} → v{first}"
    assert world.champion() == first


def test_manual_approval_waits_for_a_person_and_records_who(world: World) -> None:
    before = world.champion()
    result = world.evaluate(
        generator="extractive",
        k=4,
        approval="manual",
        require_improvement=False,
        primary_margin=0.1,
        **FAST,
    )
    evaluation = asset_metadata(result, "rag_evaluation")
    assert evaluation["decision"] == "awaiting_approval", evaluation["decision_summary"]
    version = evaluation["bundle_uri"].rsplit("/", 1)[1]
    assert world.champion() == before  # nothing moves without a person
    assert current_alias_version(world.client, DEFAULT_BUNDLE_MODEL, "challenger") == version

    refused = _cli(world, "bundle", "approve", before, "--by", "alice")
    assert refused.returncode == 1 and "only a candidate awaiting approval" in refused.stderr
    approved = _cli(world, "bundle", "approve", version, "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"champion: v{before} → v{version} (by alice)"
    tags = world.client.get_model_version(DEFAULT_BUNDLE_MODEL, version).tags
    assert tags["approved_by"] == "alice" and tags["approved_at"]
    assert tags["previous_champion"] == before
    rolled = _cli(world, "bundle", "rollback")  # back to the champion the next tests expect
    assert rolled.returncode == 0 and world.champion() == before


NON_INFERIOR = {"require_improvement": False, "primary_margin": 0.1, **FAST}


def test_a_stored_decision_against_a_replaced_champion_is_refused_as_stale(world: World) -> None:
    """A decides against v1, but before its promotion runs a person approves C (also compared
    with v1): A's stored decision, materialized later, must not replace C."""
    from jobs.sensors import stale_decision_sensor
    from llmops_dagster.evaluate.triggers import rerun_config

    before = world.champion()
    waiting = asset_metadata(
        world.evaluate(generator="extractive", k=4, approval="manual", **NON_INFERIOR),
        "rag_evaluation",
    )
    assert waiting["decision"] == "awaiting_approval", waiting["decision_summary"]
    c_version = waiting["bundle_uri"].rsplit("/", 1)[1]
    decided = world.materialize("rag_evaluation", generator="extractive", k=5, **NON_INFERIOR)
    a_eval = asset_metadata(decided, "rag_evaluation")
    assert (a_eval["decision"], a_eval["baseline_version"]) == ("champion", before)
    a_version = a_eval["bundle_uri"].rsplit("/", 1)[1]

    approved = _cli(world, "bundle", "approve", c_version, "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    assert world.champion() == c_version

    late = world.materialize("champion_model")
    assert not late.success
    (failure,) = [e for e in late.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert message == (
        f"{DEFAULT_BUNDLE_MODEL} v{a_version} was compared with v{before}, but @champion is now "
        f"v{c_version}: nothing moved. Re-evaluate v{a_version} against today's champion (the "
        "evaluate_candidate job) before promoting it."
    )
    assert world.champion() == c_version
    tags = world.client.get_model_version(DEFAULT_BUNDLE_MODEL, a_version).tags
    assert (tags["decision.outcome"], tags["decision.baseline_version"]) == ("stale", before)

    # The stale decision asks for its own re-evaluation, once.
    resources = build_resources(world.settings, with_dlt=False)
    with dg.build_sensor_context(
        instance=world.instance, resources={"mlflow": resources["mlflow"]}
    ) as context:
        (request,) = list(stale_decision_sensor(context))
    a_bundle = load_bundle(world.client, a_eval["bundle_uri"]).bundle
    assert request.run_key == f"stale-{DEFAULT_BUNDLE_MODEL}-{a_version}"
    assert request.run_config == {"ops": {"rag_evaluation": {"config": rerun_config(a_bundle)}}}

    rolled = _cli(world, "bundle", "rollback")  # back to the champion the next tests expect
    assert rolled.returncode == 0 and world.champion() == before


def test_two_evaluations_started_together_promote_only_against_the_champion_they_replace(
    world: World, tmp_path: Path
) -> None:
    """Two evaluation runs as separate Dagster processes on one instance (the shipped local
    dagster.yaml: the evaluation pool admits one step at a time). Whatever the interleaving,
    every promotion was compared with the champion it replaced; a decision overtaken by the
    other run's promotion fails as stale instead of installing an unchecked bundle.

    Each run executes all its steps inside its one process (the in-process executor claims the
    pool like the multiprocess one): what is under test is two runs at once, and a process per
    step would only add five interpreter starts per run (~2 minutes on a 2-core box)."""
    from llmops_dagster.config import PROJECT_ROOT
    from tests.support.dagster import dagster_home as make_dagster_home

    before = world.champion()
    dagster_home = make_dagster_home(tmp_path / "dagster-home")
    # Create the instance's storage once: two processes creating it at once race on its schema.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.event_log_storage.supports_global_concurrency_limits
    env = {**_env(world), "DAGSTER_HOME": str(dagster_home)}
    started_ms = int(time.time() * 1000)
    procs = []
    for k in (4, 5):
        config = tmp_path / f"run-k{k}.json"
        config.write_text(
            json.dumps({"execution": {"config": {"in_process": {}}},
                        "ops": {"rag_evaluation": {"config": {
                            "generator": "extractive", "k": k, **NON_INFERIOR}}}})
        )  # fmt: skip
        command = [
            sys.executable, "-m", "dagster", "job", "execute", "-m",
            "llmops_dagster.definitions", "-j", "evaluate_candidate", "-c", str(config),
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    registered = sorted(
        (v for v in world.client.search_model_versions(f"name = '{DEFAULT_BUNDLE_MODEL}'")
         if v.tags.get("bundle.retrieval_k") in ("4", "5")
         and v.creation_timestamp >= started_ms),
        key=lambda v: int(v.version),
    )  # fmt: skip
    assert len(registered) == 2, outputs
    outcomes = {str(v.version): v.tags.get("decision.outcome") for v in registered}
    # Walk the champion chain back to where it started: each link compared with its parent.
    version, promoted = world.champion(), []
    while version != before:
        tags = world.client.get_model_version(DEFAULT_BUNDLE_MODEL, version).tags
        assert tags["decision.baseline_version"] == tags["previous_champion"], tags
        promoted.append(version)
        version = tags["previous_champion"]
    assert promoted and set(promoted) <= set(outcomes)
    for number, outcome in outcomes.items():
        if number in promoted:
            assert outcome == "champion"
        else:  # overtaken: refused as stale, its run failed saying so
            assert outcome == "stale", (outcomes, [o[-3000:] for o in outputs])
            (proc_output,) = [o for o in outputs if f"v{number} was compared with" in o]
            assert "Re-evaluate" in proc_output
    assert [p.returncode == 0 for p in procs].count(True) == len(promoted)
    # Scaffolding for the next test (not a promotion): the champion it expects.
    world.client.set_registered_model_alias(DEFAULT_BUNDLE_MODEL, "champion", before)


def test_ask_serves_exactly_the_champion_bundle(world: World) -> None:
    champion = load_bundle(world.client, f"models:/{DEFAULT_BUNDLE_MODEL}@champion")
    question = "Within how many days must an expense claim be submitted?"
    # --local: a service this machine may be running answers from other stores than the world's.
    answered = _cli(world, "ask", question, "--json", "--local")
    assert answered.returncode == 0, answered.stderr
    payload = json.loads(answered.stdout)
    assert payload["bundle_uri"] == champion.uri
    assert payload["model_id"].startswith("extractive:")
    assert payload["prompt_version"] == champion.bundle.prompt_version
    assert payload["mode"] == champion.bundle.retrieval_mode
    assert payload["k"] == champion.bundle.retrieval_k == len(payload["retrieved"])
    assert len(payload["ranked"]) == champion.bundle.metrics_depth
    assert "30 days" in payload["text"]
    refused = _cli(world, "ask", "anything", "--k", "7")
    assert refused.returncode == 1 and "fixes k, mode and max_new_tokens" in refused.stderr


def test_a_damaging_reindex_is_caught_by_the_inputs_sensor_and_the_champion_check(
    world: World, es_client: Elasticsearch
) -> None:
    from jobs.sensors import evaluation_inputs_sensor
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.search.aliases import current_index

    resources = build_resources(world.settings, with_dlt=False)
    sensor_resources = {k: resources[k] for k in ("datasets", "elasticsearch", "mlflow", "models")}

    def tick(cursor: str | None) -> tuple[list, str | None]:
        with dg.build_sensor_context(
            instance=world.instance, cursor=cursor, resources=sensor_resources
        ) as context:
            return list(evaluation_inputs_sensor(context)), context.cursor

    first, cursor = tick(None)
    assert [type(e) for e in first] == [dg.SkipReason]
    assert tick(cursor)[0][0].skip_message == "prompt, golden set, index and generator unchanged"

    # A rebuild moves the alias; then the new index loses the documents behind the first
    # ten golden questions (what a broken source or chunker would do to a reindex).
    alias = world.settings.elasticsearch.index_alias
    before = current_index(es_client, alias)
    rebuilt = world.defs.resolve_job_def("reindex_full_rebuild").execute_in_process(
        instance=world.instance
    )
    assert rebuilt.success and current_index(es_client, alias) != before
    lost = sorted({d for item in load_golden().items[:10] for d in item.relevant_doc_ids})
    # By id: the minimal distribution has no _delete_by_query (it lives in the reindex module).
    found = es_client.search(
        index=alias, query={"terms": {"doc_id": lost}}, size=1000, source=False
    )["hits"]["hits"]
    assert found
    es_client.bulk(
        operations=[{"delete": {"_index": h["_index"], "_id": h["_id"]}} for h in found],
        refresh=True,
    )

    requests, _ = tick(cursor)
    (request,) = requests
    assert request.tags["llmops/reevaluate"] == "alias moved to another index"
    champion = load_bundle(world.client, f"models:/{DEFAULT_BUNDLE_MODEL}@champion")
    config = request.run_config["ops"]["rag_evaluation"]["config"]
    assert config == {
        "generator": "extractive",
        "k": champion.bundle.retrieval_k,
        "mode": champion.bundle.retrieval_mode,
        "metrics_depth": 10,
        "max_new_tokens": champion.bundle.max_new_tokens,
    }
    result = world.evaluate(**config, limit=30, n_resamples=1000)
    holds = _check(result, "champion_holds_up")
    assert holds.passed is False
    assert "since promotion" in holds.metadata["summary"].value
    assert "recall_at_5" in holds.metadata["comparison"].value
    assert world.champion() == champion.version  # a re-evaluation never promotes by itself
