"""The warehouse connection: closed even when the body raises, and a file locked by another
process is waited for (bounded) instead of failing the asset at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from llmops_dagster.resources import WarehouseResource
from llmops_dagster.warehouse import open_connection

pytestmark = pytest.mark.unit

HOLD_LOCK = (
    "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
    "time.sleep(float(sys.argv[2])); c.close()"
)


def _resource(path: Path, wait_s: float = 60.0) -> WarehouseResource:
    return WarehouseResource(
        database=str(path), dlt_pipelines_dir=str(path.parent / "dlt"), lock_wait_s=wait_s
    )


def test_connection_is_closed_when_the_body_raises(tmp_path: Path) -> None:
    warehouse = _resource(tmp_path / "w.duckdb")
    seen: list[duckdb.DuckDBPyConnection] = []
    with pytest.raises(ZeroDivisionError), warehouse.get_connection() as con:
        seen.append(con)
        con.execute("CREATE TABLE llmops.t (x INTEGER)")
        _ = 1 / 0
    with pytest.raises(duckdb.ConnectionException):
        seen[0].execute("SELECT 1")
    with warehouse.get_connection() as con:  # the schema was created, the table kept
        assert con.execute("SELECT count(*) FROM llmops.t").fetchone() == (0,)


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_lock_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = _hold(path, 2.0)
    started = time.monotonic()
    with _resource(path, wait_s=30).get_connection() as con:
        assert con.execute("SELECT 42").fetchone() == (42,)
    assert time.monotonic() - started >= 1.0  # it really waited for the other writer
    assert holder.wait(timeout=30) == 0


def test_a_lock_held_too_long_names_the_file_and_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = _hold(path, 6.0)
    try:
        with pytest.raises(duckdb.IOException, match=r"w\.duckdb \(LLMOPS_DUCKDB_PATH\)"):
            open_connection(path, wait_s=0.5, poll_s=0.1)
    finally:
        holder.kill()
        holder.wait(timeout=30)
