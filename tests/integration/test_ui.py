"""The Dagster UI, seen by a headless browser: the asset graph and a materialization's metadata.

Materializes the graph into a temporary Dagster instance, serves it with `llmops-dagster dev`,
and drives Debian's Chromium headless. The screenshot is kept under tests/artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import PROJECT_ROOT, Settings
from llmops_dagster.definitions import build_asset_checks, build_assets, build_resources
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import drop_indices

pytestmark = pytest.mark.integration

ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1600,1000",
    "--virtual-time-budget=20000",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is missing: scripts/setup.sh installs it (apt-get install chromium)"
    return path


def _browse(url: str, profile: Path, *extra: str) -> str:
    proc = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _visible_text(html: str) -> str:
    html = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ui_shows_the_asset_graph_and_the_mlflow_link(
    tmp_settings: Settings,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    alias = f"ui-{uuid.uuid4().hex[:8]}"
    settings = tmp_settings.override(
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias}
    )
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=sample_dir))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(
            [*build_assets(settings, sources), *build_asset_checks()],
            selection=dg.AssetSelection.groups("ingest", "prepare", "index"),
            resources=build_resources(settings),
            instance=instance,
        )
    assert result.success

    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LLMOPS_HOME": str(settings.home),
        "LLMOPS_DUCKDB_PATH": str(settings.duckdb_path),
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "ELASTICSEARCH_URL": str(settings.elasticsearch.url),
        "LLMOPS_ES_INDEX_ALIAS": alias,
    }
    cli = Path(sys.executable).with_name("llmops-dagster")
    server = subprocess.Popen(
        [str(cli), "dev", "--port", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("dagster dev never answered")
        base = f"http://127.0.0.1:{port}"
        profile = tmp_path / "chromium-profile"

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "asset-graph.png"
        shot.unlink(missing_ok=True)
        _browse(f"{base}/locations/llmops_dagster/asset-groups/prepare", profile,
                f"--screenshot={shot}")  # fmt: skip
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one

        graph = _visible_text(
            _browse(f"{base}/locations/llmops_dagster/asset-groups/prepare", profile, "--dump-dom")
        )
        for asset in ("documents", "chunks", "embeddings", "search_index", "files"):
            assert asset in graph, f"{asset} not on the asset graph page"

        page = _visible_text(_browse(f"{base}/assets/search_index", profile, "--dump-dom"))
        run_id = next(
            e.materialization.metadata["mlflow_run_id"].value
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "search_index"
        )
        assert "mlflow_run" in page
        assert f"/#/experiments/1/runs/{run_id}" in page or run_id in page
        assert alias in page  # the metadata table shows the alias this run wrote
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        drop_indices(es_client, alias)
