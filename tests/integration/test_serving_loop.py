"""The serving loop closed by Dagster, on real stores in a temp home: MLflow traces and serving
store rows → the `serve` assets (dlt into DuckDB, incremental, merged) → metrics and their WARN
checks → feedback candidates → `llmops-dagster feedback accept` → the golden / training digests
change → the sensors request evaluation and fine-tuning."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from assets.serving import SERVING_CHECKS, build_serving_load_assets
from assets.serving import feedback_candidates as feedback_candidates_asset
from assets.serving import serving_metrics as serving_metrics_asset
from llmops_dagster.config import PROJECT_ROOT, Settings
from llmops_dagster.evaluate.bundle_eval import TOP_SCORE_MEAN
from llmops_dagster.evaluate.golden import load_golden
from llmops_dagster.qa import qa_file_digest
from llmops_dagster.rag.bundle import (
    CHAMPION,
    DEFAULT_BUNDLE_MODEL,
    register_bundle,
    set_bundle_alias,
)
from llmops_dagster.resources import ServingResource, build_resources
from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.answer_log import AnswerRecord, ServedChunk, ServingStore
from llmops_dagster.tracking.mlflow_store import ensure_mlflow
from llmops_dagster.tracking.runs import open_run
from tests.conftest import asset_metadata
from tests.support.stubs import rag_bundle

pytestmark = pytest.mark.integration

CHUNKS = [
    ServedChunk("c-exp", "fs:handbook/expenses.md", "Expenses", 0.75),
    ServedChunk("c-leave", "fs:handbook/leave.md", "Leave", 0.5),
]


@dataclass(frozen=True)
class Served:
    bundle_version: str  # "" = the base model
    total_ms: float
    hit: bool
    cites: bool
    cost_usd: float
    refused: str = ""


# Champion v1: six answers (one without a hit, one refused as irrelevant, four citing); the base
# model: two.
SERVED = [
    Served("1", 100.0, True, True, 0.25),
    Served("1", 200.0, True, True, 0.25),
    Served("1", 300.0, True, True, 0.25),
    Served("1", 400.0, True, True, 0.25),
    Served("1", 500.0, True, False, 0.25, refused="nothing_relevant"),
    Served("1", 3000.0, False, False, 0.25),
    Served("", 50.0, True, True, 0.0),
    Served("", 60.0, True, True, 0.0),
]


@dataclass
class World:
    settings: Settings
    store: ServingStore
    trace_ids: list[str]
    champion_version: str
    day: str


def _champion(settings: Settings) -> str:
    """A registered bundle at @champion whose evaluation run logged a mean top score of 0.5."""
    store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    bundle = rag_bundle(max_new_tokens=64)  # extractive
    with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
        run.log(metrics={TOP_SCORE_MEAN: 0.5})
        registered = register_bundle(client, bundle, run=run, verify=False)
    set_bundle_alias(client, DEFAULT_BUNDLE_MODEL, registered.version, CHAMPION,
                     evaluation_run_id=run.run_id, decision_summary="test champion",
                     expected_champion=None)  # fmt: skip
    return registered.version


def _serve(settings: Settings, store: ServingStore) -> tuple[list[str], str]:
    """What the server does per answer: an MLflow trace with the llmops.* metadata, and the
    same answer in the serving store under the trace's id."""
    uri = settings.mlflow_uri
    ensure_mlflow(uri, settings.serving.trace_experiment)  # artifacts beside the database
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(settings.serving.trace_experiment)
    trace_ids: list[str] = []
    try:
        for n, served in enumerate(SERVED):
            retrieved = CHUNKS if served.hit else []
            cited = [CHUNKS[0].chunk_id] if served.cites else []
            question = f"How are expenses claimed, case {n}?"
            with mlflow.start_span("answer") as span:
                span.set_inputs({"question": question})
                mlflow.update_current_trace(
                    metadata={
                        keys.BUNDLE_URI: f"models:/{DEFAULT_BUNDLE_MODEL}/{served.bundle_version}"
                        if served.bundle_version
                        else "",
                        keys.BUNDLE_VERSION: served.bundle_version,
                        keys.PROMPT_VERSION: "rag_answer@0123456789ab",
                        keys.MODEL_ID: "extractive",
                        keys.PROMPT_TOKENS: "100",
                        keys.COMPLETION_TOKENS: "20",
                        keys.COST_USD: str(served.cost_usd),
                        keys.TOP_SCORE: str(retrieved[0].score) if retrieved else "",
                        keys.NO_HIT: str(not retrieved).lower(),
                        keys.CITED_CHUNK_IDS: json.dumps(cited),
                        keys.RETRIEVED_CHUNK_IDS: json.dumps([c.chunk_id for c in retrieved]),
                        keys.TOTAL_MS: str(served.total_ms),
                        keys.REFUSED: served.refused,
                    },
                    tags={keys.TAG_SOURCE: "serve"},
                )
                span.set_outputs({"answer": "Submit them in Ledgerly."})
                trace_ids.append(span.trace_id)
            store.record_answer(
                AnswerRecord(
                    trace_id=span.trace_id,
                    question=question,
                    answer="Submit them in Ledgerly.",
                    cited_chunk_ids=cited,
                    retrieved=retrieved,
                    bundle_uri=None,
                    bundle_version=served.bundle_version or None,
                    total_ms=served.total_ms,
                    prompt_tokens=100,
                    completion_tokens=20,
                    cost_usd=served.cost_usd,
                )
            )
        mlflow.flush_trace_async_logging()
    finally:
        mlflow.set_tracking_uri(previous)
    started = MlflowClient(uri).get_trace(trace_ids[0]).info.request_time
    return trace_ids, datetime.fromtimestamp(started / 1000, tz=UTC).date().isoformat()


@pytest.fixture
def world(tmp_settings: Settings, tmp_path: Path) -> Iterator[World]:
    golden, train = tmp_path / "golden.jsonl", tmp_path / "train.jsonl"
    shutil.copy(PROJECT_ROOT / "data" / "golden" / "qa.jsonl", golden)
    shutil.copy(PROJECT_ROOT / "data" / "train" / "qa.jsonl", train)
    settings = tmp_settings.override(
        corpus={"golden_path": golden, "train_qa_path": train},
        serving={"p95_latency_ms": 1000.0, "max_thumbs_down_rate": 0.6},
    )
    store = ServingStore(settings.serving_store_path)
    version = _champion(settings)
    trace_ids, day = _serve(settings, store)
    store.record_feedback(trace_ids[0], "ann", "down", correction="Within 30 days, in Ledgerly.")
    store.record_feedback(trace_ids[1], "bob", "down")
    store.record_feedback(trace_ids[2], "ann", "up")
    store.record_feedback(trace_ids[6], "ann", "up")
    yield World(settings, store, trace_ids, version, day)


def _resources(settings: Settings) -> dict:
    resources = build_resources(settings)
    serving: ServingResource = resources["serving"]
    # Settle 0: the traces were written a moment ago and the test does not wait a minute.
    resources["serving"] = ServingResource(
        store_path=serving.store_path,
        trace_experiment=serving.trace_experiment,
        candidates_path=serving.candidates_path,
        p95_latency_ms=serving.p95_latency_ms,
        max_thumbs_down_rate=serving.max_thumbs_down_rate,
        max_no_answer_rate=serving.max_no_answer_rate,
        max_score_drift=serving.max_score_drift,
        trace_settle_s=0.0,
        # 8 answers x 120 tokens = 960 tokens and $1.50 today: over the tokens, within the cost.
        daily_token_budget=900,
        daily_cost_budget_usd=2.0,
    )
    return resources


def _materialize(world: World, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    assets = [
        build_serving_load_assets(world.settings.warehouse_target()),
        serving_metrics_asset,
        feedback_candidates_asset,
        *SERVING_CHECKS,
    ]
    result = dg.materialize(assets, resources=_resources(world.settings), instance=instance)
    assert result.success
    return result


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _warehouse_rows(settings: Settings, sql: str) -> list[tuple]:
    con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_traces_and_feedback_to_metrics_checks_candidates_and_reviewed_data(
    world: World, es_settings: Settings
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    first = _materialize(world, instance)
    traces = asset_metadata(first, "serving_traces")
    feedback = asset_metadata(first, "serving_feedback")
    assert (traces["rows_loaded"], traces["rows_total"]) == (8, 8)
    assert (feedback["rows_loaded"], feedback["rows_total"]) == (4, 4)
    assert traces["mlflow_run_id"]

    metrics = asset_metadata(first, "serving_metrics")
    assert metrics["latest_day"] == world.day
    assert metrics["requests"] == 8.0
    # Latencies 50, 60, 100, 200, 300, 400, 500, 3000 ms: nearest rank 4 and 8.
    assert (metrics["p50_latency_ms"], metrics["p95_latency_ms"]) == (200.0, 3000.0)
    assert metrics["thumbs_down_rate"] == 0.5  # 2 of 4 rated answers
    assert metrics["no_hit_rate"] == 0.125
    assert metrics["no_answer_rate"] == 0.25  # + the relevance refusal
    assert metrics["citation_rate"] == 0.75
    assert metrics["cost_usd"] == 1.5
    assert metrics["challenger_vs_champion"] == "no challenger to compare"
    by_group = {
        (r.data["day"], r.data["bundle_version"]): r.data
        for r in first.asset_materializations_for_node("serving_metrics")[0]
        .metadata["by_day_and_bundle"]
        .value.records
    }
    assert set(by_group) == {(world.day, "1"), (world.day, "base")}
    champion_row = by_group[(world.day, "1")]
    assert (champion_row["requests"], champion_row["p95_latency_ms"]) == (6, 3000.0)
    assert (champion_row["rated"], champion_row["thumbs_down"]) == (3, 2)
    assert (champion_row["scored"], champion_row["top_score_mean"]) == (5, 0.75)
    assert (champion_row["prompt_tokens"], champion_row["completion_tokens"]) == (600, 120)

    checks = _checks(first)
    assert {name: check.passed for name, check in checks.items()} == {
        "p95_latency_within_budget": False,  # 3000 ms > 1000 ms
        "thumbs_down_rate_within_limit": True,  # 0.5 ≤ 0.6
        "no_answer_rate_within_limit": False,  # 0.25 > 0.2
        "retrieval_score_drift": False,  # served 0.75 vs evaluated 0.5
        "daily_spend_within_budget": False,  # 960 tokens > 900
    }
    assert {c.severity for c in checks.values()} == {dg.AssetCheckSeverity.WARN}
    assert checks["daily_spend_within_budget"].description == (
        f"{world.day}: 960 tokens of 900, $1.5000 of $2.0000 — over budget"
    )
    drift = {k: v.value for k, v in checks["retrieval_score_drift"].metadata.items()}
    assert (drift["served_top_score_mean"], drift["evaluated_top_score_mean"]) == (0.75, 0.5)
    assert (drift["drift"], drift["served_answers"]) == (0.5, 5)
    assert drift["champion"] == f"models:/{DEFAULT_BUNDLE_MODEL}/{world.champion_version}"

    candidates = asset_metadata(first, "feedback_candidates")
    assert (candidates["pending"], candidates["accepted"], candidates["candidates"]) == (2, 0, 2)
    lines = Path(candidates["path"]).read_text().splitlines()
    assert [json.loads(line)["trace_id"] for line in lines] == world.trace_ids[:2]
    assert _warehouse_rows(
        world.settings, "SELECT trace_id, status, correction FROM llmops.feedback_candidates "
        "ORDER BY feedback_at"
    ) == [
        (world.trace_ids[0], "pending", "Within 30 days, in Ledgerly."),
        (world.trace_ids[1], "pending", None),
    ]  # fmt: skip

    # Nothing new: nothing loaded, nothing duplicated.
    second = _materialize(world, instance)
    for table, total in (("serving_traces", 8), ("serving_feedback", 4)):
        meta = asset_metadata(second, table)
        assert (meta["rows_loaded"], meta["rows_total"]) == (0, total), table
    assert asset_metadata(second, "serving_metrics")["requests"] == 8.0

    # A user changes their mind: the row is replaced, not added.
    world.store.record_feedback(world.trace_ids[2], "ann", "down", correction="By 31 March.")
    third = _materialize(world, instance)
    meta = asset_metadata(third, "serving_feedback")
    assert (meta["rows_loaded"], meta["rows_total"]) == (1, 4)
    assert asset_metadata(third, "serving_traces")["rows_loaded"] == 0
    assert _warehouse_rows(
        world.settings,
        f"SELECT rating, correction FROM raw.serving_feedback "
        f"WHERE trace_id = '{world.trace_ids[2]}' AND user_id = 'ann'",
    ) == [("down", "By 31 March.")]
    assert asset_metadata(third, "serving_metrics")["thumbs_down_rate"] == 0.75
    assert asset_metadata(third, "feedback_candidates")["pending"] == 3

    # Review: the sensors first record the inputs as they are.
    settings = world.settings.override(elasticsearch={"url": es_settings.es_url})
    resources = build_resources(settings, with_dlt=False)
    eval_cursor = _tick_evaluation(resources, None, expect_skip="first tick")
    train_cursor = _tick_training(resources, None, expect_skip="first tick")

    golden_before = load_golden(settings.corpus.golden_path).version
    train_before = qa_file_digest(settings.corpus.train_qa_path)
    runner, env = CliRunner(), _env(settings)
    accepted = runner.invoke(
        _cli(), ["feedback", "accept", world.trace_ids[0], "--to", "golden"], env=env
    )
    assert accepted.exit_code == 0, accepted.output
    golden_after = load_golden(settings.corpus.golden_path).version
    assert golden_after != golden_before
    assert f"golden digest:   {golden_after}" in accepted.output
    assert qa_file_digest(settings.corpus.train_qa_path) == train_before
    item = load_golden(settings.corpus.golden_path).items[-1]
    assert (item.reference_answer, item.relevant_doc_ids) == (
        "Within 30 days, in Ledgerly.",
        ("fs:handbook/expenses.md",),
    )

    (request,) = _tick_evaluation(resources, eval_cursor)
    assert request.tags["llmops/reevaluate"] == "new golden set digest"
    assert _tick_training(resources, train_cursor, expect_skip="unchanged") == train_cursor

    refused = runner.invoke(_cli(), ["feedback", "accept", world.trace_ids[1]], env=env)
    assert refused.exit_code == 1 and "--answer" in refused.output
    accepted = runner.invoke(
        _cli(),
        ["feedback", "accept", world.trace_ids[1], "--to", "train", "--answer", "Ledgerly."],
        env=env,
    )
    assert accepted.exit_code == 0, accepted.output
    train_after = qa_file_digest(settings.corpus.train_qa_path)
    assert train_after != train_before
    assert f"training digest: {train_after}" in accepted.output

    (retrain,) = _tick_training(resources, train_cursor)
    assert retrain.tags["llmops/retrain"].startswith(f"new training set digest {train_after[:12]}")
    assert retrain.run_config == {
        "ops": {
            "rag_evaluation": {
                "config": {
                    "generator": "llm",
                    "k": 3,
                    "mode": "hybrid_rrf",
                    "metrics_depth": 10,
                    "max_new_tokens": 64,
                }
            }
        }
    }
    fourth = _materialize(world, instance)
    meta = asset_metadata(fourth, "feedback_candidates")
    assert (meta["pending"], meta["accepted"], meta["rejected"]) == (1, 2, 0)


def _cli():
    from llmops_dagster.cli import main

    return main


def _env(settings: Settings) -> dict[str, str]:
    return {
        "LLMOPS_HOME": str(settings.home),
        "LLMOPS_DUCKDB_PATH": str(settings.duckdb_path),
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "LLMOPS_SERVING_STORE": str(settings.serving_store_path),
        "LLMOPS_GOLDEN": str(settings.corpus.golden_path),
        "LLMOPS_TRAIN_QA": str(settings.corpus.train_qa_path),
    }


def _tick(
    sensor: dg.SensorDefinition,
    resources: dict,
    cursor: str | None,
    *,
    expect_skip: str | None = None,
):
    """One tick of ``sensor`` with the resources it declares: its run requests, or (with
    ``expect_skip``) its new cursor after the one skip that says so."""
    needed = {k: resources[k] for k in sensor.required_resource_keys}
    with dg.build_sensor_context(cursor=cursor, resources=needed) as context:
        events = list(sensor(context))
        if expect_skip is not None:
            (skip,) = events
            assert isinstance(skip, dg.SkipReason) and expect_skip in str(skip.skip_message)
            return context.cursor
    return [e for e in events if isinstance(e, dg.RunRequest)]


def _tick_evaluation(resources: dict, cursor: str | None, *, expect_skip: str | None = None):
    from jobs.sensors import evaluation_inputs_sensor

    return _tick(evaluation_inputs_sensor, resources, cursor, expect_skip=expect_skip)


def _tick_training(resources: dict, cursor: str | None, *, expect_skip: str | None = None):
    from jobs.sensors import training_inputs_sensor

    return _tick(training_inputs_sensor, resources, cursor, expect_skip=expect_skip)


def test_a_restricted_answer_reaches_the_warehouse_without_its_text(world: World) -> None:
    """An hr answer and the hr member's correction: the warehouse tables, the candidates file and
    the asset's preview (all readable beyond hr) keep the rows with the text withheld; the
    review command on the server host still reads it."""
    secret, mark = "Band P4 is 68,500 (Curlew)", "[withheld: audience hr]"
    uri = world.settings.mlflow_uri
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(world.settings.serving.trace_experiment)
    try:  # the trace as the server writes it for a restricted answer: no text, its audience
        with mlflow.start_span("answer") as span:
            span.set_inputs({"question": mark})
            mlflow.update_current_trace(
                metadata={keys.BUNDLE_VERSION: "1", keys.TOTAL_MS: "10",
                          keys.AUDIENCE: '["hr"]', keys.RESTRICTED: "true"},
                tags={keys.TAG_SOURCE: "serve"},
            )  # fmt: skip
            span.set_outputs({"answer": mark})
        mlflow.flush_trace_async_logging()
    finally:
        mlflow.set_tracking_uri(previous)
    trace_id = span.trace_id
    world.store.record_answer(
        AnswerRecord(
            trace_id=trace_id,
            question="What is band P4?",
            answer=secret,
            cited_chunk_ids=["c-hr"],
            retrieved=[ServedChunk("c-hr", "fs:confidential/hr/salary-bands.md", "Bands", 0.8)],
            bundle_uri=None,
            bundle_version="1",
            total_ms=10.0,
            prompt_tokens=100,
            completion_tokens=20,
            cost_usd=0.0,
            asker_groups=["hr"],
            audience=["hr"],
        )
    )
    world.store.record_feedback(trace_id, "hr-ann", "down", correction=secret, comment=secret)

    result = _materialize(world, dg.DagsterInstance.ephemeral())
    settings = world.settings
    assert _warehouse_rows(
        settings,
        "SELECT trace_id, correction, comment, audience, text_withheld FROM raw.serving_feedback"
        f" WHERE trace_id IN ('{trace_id}', '{world.trace_ids[0]}') ORDER BY updated_at",
    ) == [
        (world.trace_ids[0], "Within 30 days, in Ledgerly.", None, '["public"]', False),
        (trace_id, mark, mark, '["hr"]', True),
    ]
    assert _warehouse_rows(
        settings,
        f"SELECT audience, restricted FROM raw.serving_traces WHERE trace_id = '{trace_id}'",
    ) == [('["hr"]', True)]
    assert _warehouse_rows(
        settings,
        "SELECT question, answer, correction, cited_doc_ids, text_withheld"
        f" FROM llmops.feedback_candidates WHERE trace_id = '{trace_id}'",
    ) == [(mark, mark, mark, [], True)]
    candidates = asset_metadata(result, "feedback_candidates")
    assert candidates["text_withheld"] == 1
    assert secret not in Path(candidates["path"]).read_text()
    assert mark in str(candidates["pending_preview"]) and "68,500" not in str(
        candidates["pending_preview"]
    )
    listed = CliRunner().invoke(_cli(), ["feedback", "list", "--json"], env=_env(settings))
    assert listed.exit_code == 0, listed.output
    (row,) = [c for c in json.loads(listed.output) if c["trace_id"] == trace_id]
    assert (row["answer"], row["correction"], row["audience"]) == (secret, secret, ["hr"])


def test_serving_metrics_are_computed_while_the_registry_is_down(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metrics come from the warehouse: with MLflow unreachable only the challenger
    comparison is skipped, saying why, and the asset still materializes."""
    from llmops_dagster.resources import MlflowResource
    from tests.support.ports import free_port

    instance = dg.DagsterInstance.ephemeral()
    _materialize(world, instance)  # the traces and feedback are in the warehouse
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    resources = {
        **_resources(world.settings),
        "mlflow": MlflowResource(tracking_uri=f"http://127.0.0.1:{free_port()}"),
    }
    result = dg.materialize(
        [serving_metrics_asset],
        resources=resources,
        instance=instance,
        selection=["serving_metrics"],
    )
    assert result.success
    metrics = asset_metadata(result, "serving_metrics")
    assert metrics["requests_total"] == 8
    assert str(metrics["challenger_vs_champion"]).startswith(
        "not compared: the registry is unreachable"
    )
    assert metrics["online_gate"] == "skipped: the registry is unreachable"
