"""The code location loads, validates, and `llmops-dagster dev` serves the UI and stops cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from llmops_dagster.config import PROJECT_ROOT

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


def test_definitions_validate(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(_dagster_home(tmp_path))}
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
    }
    assert defs.resolve_job_def("serving_watch") is not None
    assert defs.resolve_job_def("finetune_and_evaluate") is not None
    assert {s.name for s in defs.sensors} >= {"evaluation_inputs_sensor", "training_inputs_sensor"}


def dg_key(path: str):
    import dagster as dg

    return dg.AssetKey(path.split("/"))


def test_dev_serves_the_ui_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(_dagster_home(tmp_path))}
    cli = Path(sys.executable).with_name("llmops-dagster")
    # Started the way a script would start it in the background: SIGINT ignored (as `&` does).
    proc = subprocess.Popen(
        [str(cli), "dev", "--port", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        info = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
                    info = json.loads(r.read())
                break
            except OSError:
                time.sleep(1)
        assert info is not None, "dagster dev never answered"
        assert info["dagster_version"]
        query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql",
            data=query,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            nodes = json.loads(response.read())["data"]["assetNodes"]
        assert {"/".join(n["assetKey"]["path"]) for n in nodes} >= EXPECTED_ASSETS

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # No webserver, daemon or code server of this instance is left, and the port is free.
    time.sleep(1)
    assert _processes_with_env(f"DAGSTER_HOME={env['DAGSTER_HOME']}") == []
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def _processes_with_env(entry: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if entry.encode() in environ:
            found.append(f"{pid}: {cmdline.decode(errors='replace')}")
    return found
