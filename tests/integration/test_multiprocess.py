"""The code location under the multiprocess executor (`dagster asset materialize`): each step in
its own process, one dlt asset per source, and the `duckdb` pool serialising DuckDB writers."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_two_sources_load_through_the_multiprocess_executor(tmp_path: Path) -> None:
    db = tmp_path / "source.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE faq (id INTEGER PRIMARY KEY, title TEXT, body TEXT, updated_at TEXT)")
    con.executemany(
        "INSERT INTO faq VALUES (?, ?, ?, ?)",
        [(i, f"Q{i}", f"answer {i}", f"2026-02-0{i} 00:00:00") for i in range(1, 4)],
    )
    con.commit()
    con.close()
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        f"filesystem:\n  root: {PROJECT_ROOT / 'data' / 'sample'}\n"
        "sql:\n  url_env: MP_SOURCE_DB\n  tables: [{name: faq}]\n"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    store = tmp_path / "llmops"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LLMOPS_HOME": str(store),
        "LLMOPS_DUCKDB_PATH": str(store / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "LLMOPS_SOURCES_CONFIG": str(sources),
        "MP_SOURCE_DB": f"sqlite:///{db}",
    }
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "llmops_dagster.definitions",
         "--select", "fs/files,sql/faq,documents,chunks"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "RUN_SUCCESS" in log
    assert log.count("Launching subprocess for") >= 4  # really one process per step
    # Both loaders write the one DuckDB file: the pool made one of them wait.
    assert "Step blocked by limit for pool duckdb" in log
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
