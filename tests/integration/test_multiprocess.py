"""The code location under the multiprocess executor (`dagster asset materialize`): each step in
its own process, one dlt asset per source, and the `warehouse` pool serialising DuckDB writers."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from llmops_dagster.config import PROJECT_ROOT
from tests.support.dagster import dagster_home, faq_database, materialize_in_subprocesses
from tests.support.tracking import sqlite_store

pytestmark = pytest.mark.integration


def test_two_sources_load_through_the_multiprocess_executor(tmp_path: Path) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        f"filesystem:\n  root: {PROJECT_ROOT / 'data' / 'sample'}\n"
        "sql:\n  url_env: MP_SOURCE_DB\n  tables: [{name: faq}]\n"
    )
    home = dagster_home(tmp_path / "dagster_home")
    store = tmp_path / "llmops"
    env = {
        "DAGSTER_HOME": str(home),
        "LLMOPS_HOME": str(store),
        "LLMOPS_DUCKDB_PATH": str(store / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": sqlite_store(store / "mlflow.db"),
        "LLMOPS_SOURCES_CONFIG": str(sources),
        "MP_SOURCE_DB": faq_database(tmp_path / "source.db"),
    }
    log = materialize_in_subprocesses("fs/files,sql/faq,documents,chunks", env)
    assert log.count("Launching subprocess for") >= 4  # really one process per step
    # Both loaders write the one DuckDB file: the pool made one of them wait.
    assert "Step blocked by limit for pool warehouse" in log
    with duckdb.connect(str(store / "warehouse.duckdb"), read_only=True) as warehouse:
        sources_seen = dict(
            warehouse.execute(
                "SELECT source, count(*) FROM llmops.documents GROUP BY source"
            ).fetchall()
        )
        (chunks,) = warehouse.execute(
            "SELECT count(*) FROM llmops.chunks WHERE status = 'active'"
        ).fetchone()
    assert sources_seen == {"fs": 51, "sql": 3}  # 47 public sample files + 4 confidential
    assert chunks > 50
