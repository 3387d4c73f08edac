"""The Dagster UI, seen by a headless browser: the asset graph and a materialization's metadata.

Materializes the graph into a temporary Dagster instance, serves it with `llmops-dagster dev`,
and drives Debian's Chromium headless. The screenshot is kept under tests/artifacts/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import dagster as dg
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import PROJECT_ROOT, Settings
from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig
from tests.conftest import drop_indices
from tests.support.dagster import dagster_dev, dagster_home, materialize_groups
from tests.support.warehouse import copy_embedding_cache

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


def test_ui_shows_the_asset_graph_and_the_mlflow_link(
    tmp_settings: Settings,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
    tmp_path: Path,
) -> None:
    alias = f"ui-{uuid.uuid4().hex[:8]}"
    settings = tmp_settings.override(
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias}
    )
    copy_embedding_cache(sample_embeddings, settings)
    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=sample_dir))
    home = dagster_home(tmp_path / "dagster_home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = materialize_groups(settings, sources, instance=instance)

    env = {
        "LLMOPS_HOME": str(settings.home),
        "LLMOPS_DUCKDB_PATH": str(settings.duckdb_path),
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "ELASTICSEARCH_URL": str(settings.elasticsearch.url),
        "LLMOPS_ES_INDEX_ALIAS": alias,
    }
    try:
        with dagster_dev(home, tmp_path / "dev.log", env=env) as dev:
            _check_pages(dev.url, tmp_path / "chromium-profile", result, alias)
    finally:
        drop_indices(es_client, alias)


def _check_pages(base: str, profile: Path, result: dg.ExecuteInProcessResult, alias: str) -> None:
    """The asset graph (screenshot kept) and the index's metadata page, as the browser shows
    them."""
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
