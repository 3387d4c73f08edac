"""The code location loads, validates, and `llmops-dagster dev` serves the UI and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llmops_dagster.config import PROJECT_ROOT
from tests.support.dagster import dagster_dev, dagster_home, wait_until_gone
from tests.support.ports import port_is_closed

pytestmark = pytest.mark.integration

EXPECTED_ASSETS = {
    "fs/files",
    "documents",
    "chunks",
    "embeddings",
    "search_index",
    "serving_traces",
    "serving_feedback",
    "serving_metrics",
    "feedback_candidates",
}


def test_definitions_validate(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home(tmp_path / "dagster_home"))}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_code_location_has_the_graph() -> None:
    from llmops_dagster.definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys >= EXPECTED_ASSETS
    assert defs.resolve_job_def("reindex") is not None
    assert defs.resolve_job_def("reindex_full_rebuild") is not None
    graph = defs.resolve_asset_graph()
    assert graph.get(dg_key("chunks")).parent_keys == {dg_key("documents")}
    assert graph.get(dg_key("documents")).parent_keys == {dg_key("fs/files")}
    # The serving loop: loads → metrics (with its WARN checks) and candidates; its jobs.
    assert graph.get(dg_key("serving_metrics")).parent_keys == {
        dg_key("serving_traces"),
        dg_key("serving_feedback"),
    }
    assert graph.get(dg_key("feedback_candidates")).parent_keys == {dg_key("serving_feedback")}
    checks = {
        key.name for key in graph.asset_check_keys if key.asset_key == dg_key("serving_metrics")
    }
    assert checks == {
        "p95_latency_within_budget",
        "thumbs_down_rate_within_limit",
        "no_answer_rate_within_limit",
        "retrieval_score_drift",
        "daily_spend_within_budget",
    }
    assert defs.resolve_job_def("serving_watch") is not None
    # Online judging: one day per run, its own job; the whole graph leaves it out.
    judge_job = defs.resolve_job_def("judge_served_answers")
    assert judge_job.partitions_def is not None
    whole = defs.resolve_job_def("whole_graph")
    assert "serving_judgments" not in {n.name for n in whole.nodes_in_topological_order}
    assert defs.resolve_job_def("finetune_and_evaluate") is not None
    assert {s.name for s in defs.sensors} >= {"evaluation_inputs_sensor", "training_inputs_sensor"}


def dg_key(path: str):
    import dagster as dg

    return dg.AssetKey(path.split("/"))


def test_dev_serves_the_ui_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = dagster_home(tmp_path / "dagster_home")
    # Started the way a script would start it in the background: SIGINT ignored (as `&` does).
    with dagster_dev(home, tmp_path / "dev.log", sigint_ignored=True) as dev:
        assert dev.info["dagster_version"]
        query = {"query": "{ assetNodes { assetKey { path } } }"}
        response = httpx.post(f"{dev.url}/graphql", json=query, timeout=60)
        nodes = response.json()["data"]["assetNodes"]
        assert {"/".join(n["assetKey"]["path"]) for n in nodes} >= EXPECTED_ASSETS

        dev.proc.send_signal(signal.SIGTERM)
        assert dev.proc.wait(timeout=60) is not None
    # No webserver, daemon or code server of this instance is left, and the port is free.
    wait_until_gone(home, within_s=5)
    assert port_is_closed(dev.port)
