"""Dagster on PostgreSQL with queued runs in parallel: deploy/dagster.postgres.yaml, as shipped.

A real ``dagster-daemon`` (its run coordinator dequeues) over a DAGSTER_HOME holding a copy of
deploy/dagster.postgres.yaml, its storage in a fresh database of the session's PostgreSQL
cluster. The code location is the project's (``workspace.yaml`` → ``llmops_dagster.definitions``)
with settings from the environment pointing at throw-away stores. Two runs are submitted with
``dagster job launch`` (through the queued coordinator): an incremental reindex of the one
source that picked up a new file, and an evaluation of the live index. They must both succeed,
run at the same time, and keep every event.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import PROJECT_ROOT, Settings
from llmops_dagster.services.dagster_dev import start_dagster_daemon, stop_dagster_daemon
from llmops_dagster.services.postgres_local import LocalPostgres, create_database
from tests.conftest import drop_indices
from tests.support.dagster import dagster_home as make_dagster_home
from tests.support.dagster import wait_until_gone
from tests.support.tracking import sqlite_store
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# One process per run (no step subprocesses): the runs' parallelism is what is under test.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
EVALUATION = {
    **IN_PROCESS,
    "ops": {
        "rag_evaluation": {
            "config": {
                # Two golden questions (about welcome.md and expenses.md), extractive candidate
                # vs the base model, few tokens: seconds, not minutes. The floor is one the
                # tiny index meets; the few-cases override is recorded on the decision.
                "generator": "extractive",
                "limit": 2,
                "max_new_tokens": 8,
                "allow_few_cases": True,
                "minimums": {"recall_at_5": 0.5},
                "n_resamples": 200,
            }
        }
    },
}
REINDEX_STEPS = {
    "ingest_fs",
    "documents",
    "chunks",
    "embeddings",
    "search_index",
    "search_index_alias_points_to_healthy_index",
    "search_index_index_count_matches_chunks",
    "search_index_vector_dims_match_model",
}
REINDEX_ASSETS = {"fs/files", "documents", "chunks", "embeddings", "search_index"}
EVALUATION_STEPS = {
    "rag_evaluation",
    "champion_model",
    "rag_evaluation_champion_comparison",
    "rag_evaluation_champion_holds_up",
    "rag_evaluation_quality_gate",
}
EVALUATION_ASSETS = {"rag_evaluation", "champion_model"}
# A queued run's whole life, in this order, each exactly once (Dagster 1.13 writes no
# RUN_DEQUEUED: the daemon's launch shows as RUN_STARTING).
RUN_LIFECYCLE = ["RUN_ENQUEUED", "RUN_STARTING", "RUN_START", "RUN_SUCCESS"]
# A bound, not a measurement: both runs take well under a minute on an idle 2-core box, but
# several minutes when other heavy processes share its cores.
RUN_TIMEOUT_S = 600


@pytest.fixture
def corpus(tmp_path: Path, sample_dir: Path) -> Path:
    """Two handbook pages to start with; a third arrives before the reindex."""
    root = tmp_path / "corpus"
    (root / "handbook").mkdir(parents=True)
    for name in ("welcome.md", "expenses.md"):
        shutil.copy(sample_dir / "handbook" / name, root / "handbook" / name)
    return root


def test_queued_runs_in_parallel_on_postgres(
    tmp_path: Path,
    corpus: Path,
    sample_dir: Path,
    postgres: LocalPostgres,
    es_settings: Settings,
    es_client: Elasticsearch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = f"dagster_{uuid.uuid4().hex[:8]}"
    create_database(postgres, database)
    alias = f"dagpg-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "llmops-home"
    sources = tmp_path / "sources.yaml"
    sources.write_text(json.dumps({"filesystem": {"root": str(corpus), "globs": ["**/*.md"]}}))
    # The environment the code location, the run workers and this process all read.
    env = {
        "LLMOPS_HOME": str(home),
        "LLMOPS_DUCKDB_PATH": str(home / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": sqlite_store(home / "mlflow" / "mlflow.db"),
        "ELASTICSEARCH_URL": str(es_settings.elasticsearch.url),
        "LLMOPS_ES_INDEX_ALIAS": alias,
        "LLMOPS_SOURCES_CONFIG": str(sources),
        "LLMOPS_MODELS_CACHE": str(Settings().models_cache_dir),
        "LLMOPS_TORCH_THREADS": "1",
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_USER": postgres.user,
        "DAGSTER_PG_PASSWORD": "",  # the test cluster trusts loopback connections
        "DAGSTER_PG_DB": database,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LLMOPS_WAREHOUSE_URL", raising=False)  # the DuckDB file, here
    dagster_home = make_dagster_home(
        tmp_path / "dagster_home", PROJECT_ROOT / "deploy" / "dagster.postgres.yaml"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))

    # The starting state, in this process: the two pages indexed (the evaluation needs a live
    # index) and the MLflow store created once, before two processes share it.
    settings = Settings()
    assert settings.elasticsearch.index_alias == alias and settings.home == home
    from jobs import REINDEX_SELECTION
    from llmops_dagster.definitions import build_asset_checks, build_assets, load_sources
    from llmops_dagster.resources import build_resources

    first = dg.materialize(
        [*build_assets(settings, load_sources(settings)), *build_asset_checks()],
        selection=REINDEX_SELECTION,
        resources=build_resources(settings),
        run_config=IN_PROCESS,
    )
    assert first.success
    before = int(es_client.count(index=alias)["count"])
    shutil.copy(sample_dir / "handbook" / "leave.md", corpus / "handbook" / "leave.md")

    daemon_log = tmp_path / "dagster-daemon.log"
    daemon = start_dagster_daemon(dagster_home, log=daemon_log)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        reindex_id, evaluation_id = str(uuid.uuid4()), str(uuid.uuid4())
        launches = [
            _launch("reindex", reindex_id, IN_PROCESS, tmp_path),
            _launch("evaluate_candidate", evaluation_id, EVALUATION, tmp_path),
        ]
        for proc, log in launches:
            assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
        statuses = _wait_for_runs(instance, [reindex_id, evaluation_id], daemon, daemon_log)
        assert statuses == {reindex_id: "SUCCESS", evaluation_id: "SUCCESS"}, _failure_report(
            instance, [reindex_id, evaluation_id], daemon_log
        )

        reindex = _records(instance, reindex_id)
        evaluation = _records(instance, evaluation_id)
        # Both went through the queue and ran their whole life, with no event lost.
        for records in (reindex, evaluation):
            lifecycle = [t for _, t, _ in records if t.startswith("RUN_")]
            assert lifecycle == RUN_LIFECYCLE
            ids = [storage_id for storage_id, _, _ in records]
            assert ids == sorted(set(ids))
        _assert_run_events(reindex, REINDEX_STEPS, REINDEX_ASSETS, checks=3)
        _assert_run_events(evaluation, EVALUATION_STEPS, EVALUATION_ASSETS, checks=3)
        # They overlapped: each started before the other succeeded (storage ids are one
        # sequence in PostgreSQL, so they order events across runs).
        assert _event_id(reindex, "RUN_START") < _event_id(evaluation, "RUN_SUCCESS")
        assert _event_id(evaluation, "RUN_START") < _event_id(reindex, "RUN_SUCCESS")

        # The reindex added exactly the new page's chunks to the live index the evaluation read.
        index_meta = _materialization(instance, reindex_id, "search_index")
        assert index_meta["deleted"] == 0 and index_meta["indexed"] > 0
        assert index_meta["unchanged"] == before  # the two first pages were not rewritten
        es_client.indices.refresh(index=alias)
        assert int(es_client.count(index=alias)["count"]) == before + index_meta["indexed"]
        evaluation_meta = _materialization(instance, evaluation_id, "rag_evaluation")
        assert evaluation_meta["cases"] == 2
        assert evaluation_meta["decision"] in ("champion", "challenger")
        # The file's pool limit is the one in force for the DuckDB single writer.
        assert instance.event_log_storage.get_concurrency_info("duckdb").limit == 1
    finally:
        code = stop_dagster_daemon(daemon, grace_s=60)
        instance.dispose()
        drop_indices(es_client, alias)
    assert code == 0, daemon_log.read_text()[-3000:]
    # Code servers (the daemon's and each `job launch`'s) stop on their own once the process
    # that heartbeats them is gone; nothing of this instance may be left after that.
    wait_until_gone(dagster_home, within_s=120)


def _launch(
    job: str, run_id: str, run_config: dict, tmp_path: Path
) -> tuple[subprocess.Popen, Path]:
    """``dagster job launch``: submits through the instance's run coordinator (the queue)."""
    log = tmp_path / f"launch-{job}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster")), "job", "launch",
             "-w", str(PROJECT_ROOT / "workspace.yaml"), "-j", job, "--run-id", run_id,
             "--config-json", json.dumps(run_config)],
            cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, log


def _wait_for_runs(
    instance: dg.DagsterInstance, run_ids: list[str], daemon: subprocess.Popen, log: Path
) -> dict[str, str]:
    done = {"SUCCESS", "FAILURE", "CANCELED"}

    def statuses() -> dict[str, str]:
        found = {}
        for run_id in run_ids:
            run = instance.get_run_by_id(run_id)
            found[run_id] = run.status.value if run else "MISSING"
        return found

    def finished() -> dict[str, str] | None:
        now = statuses()
        return now if all(status in done for status in now.values()) else None

    return wait_until(
        finished,
        timeout_s=RUN_TIMEOUT_S,
        what="both runs finished",
        interval_s=1.0,
        proc=daemon,
        log=log,
        detail=statuses,
    )


def _records(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, str, str]]:
    """(storage id, event type name, step key or asset) of every Dagster event of the run."""
    rows = []
    for record in instance.get_records_for_run(run_id, ascending=True).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        kind = event.event_type.name  # RUN_START, not its stored value PIPELINE_START
        detail = event.step_key or ""
        if kind == "ASSET_MATERIALIZATION":
            detail = event.asset_key.to_user_string()
        rows.append((record.storage_id, kind, detail))
    return rows


def _assert_run_events(
    records: list[tuple[int, str, str]], steps: set[str], assets: set[str], *, checks: int
) -> None:
    counts = Counter(event_type for _, event_type, _ in records)
    succeeded = [detail for _, t, detail in records if t == "STEP_SUCCESS"]
    materialized = [detail for _, t, detail in records if t == "ASSET_MATERIALIZATION"]
    assert sorted(succeeded) == sorted(steps)
    assert sorted(materialized) == sorted(assets)
    assert counts["ASSET_CHECK_EVALUATION"] == checks
    assert counts["STEP_FAILURE"] == 0


def _event_id(records: list[tuple[int, str, str]], event_type: str) -> int:
    (found,) = [storage_id for storage_id, t, _ in records if t == event_type]
    return found


def _materialization(instance: dg.DagsterInstance, run_id: str, asset: str) -> dict:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    (event,) = [
        r.event_log_entry.asset_materialization
        for r in records.records
        if r.event_log_entry.asset_materialization.asset_key.to_user_string() == asset
    ]
    return {key: value.value for key, value in event.metadata.items()}


def _failure_report(instance: dg.DagsterInstance, run_ids: list[str], daemon_log: Path) -> str:
    lines = []
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is not None and event.event_type.name in ("STEP_FAILURE", "RUN_FAILURE"):
                lines.append(f"{run_id[:8]} {event.event_type_value}: {event.message}")
    return "\n".join(lines) + "\n--- daemon log ---\n" + daemon_log.read_text()[-3000:]
