"""The filesystem source is really incremental (dlt issue #2271 reports full re-copies)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pytest

from llmops_dagster.config import Settings
from llmops_dagster.sources.dlt_pipelines import make_pipeline, run_pipeline
from llmops_dagster.sources.filesystem import FS_TABLE, list_current_files, make_filesystem_source

pytestmark = pytest.mark.integration


def _bump_mtime(path: Path, seconds: float = 5.0) -> None:
    """Move mtime clearly forward: same-tick writes would otherwise share a timestamp."""
    stamp = time.time() + seconds
    os.utime(path, (stamp, stamp))


def test_second_run_loads_nothing_and_a_touched_file_loads_alone(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "nested").mkdir(parents=True)
    for i in range(5):
        (root / f"doc{i}.md").write_text(f"# Doc {i}\n\nbody {i}\n")
    (root / "nested" / "page.html").write_text("<h1>Page</h1><p>hello</p>")
    (root / "ignored.bin").write_bytes(b"\x00" * 10)
    (root / "huge.txt").write_bytes(b"x" * 5000)

    settings = Settings(home=tmp_path / "home")

    def run() -> dict[str, int]:
        # A fresh pipeline object per run, as each Dagster run has: the cursor must persist.
        pipeline = make_pipeline(settings.warehouse_target(), "fs_incremental_test")
        return run_pipeline(pipeline, make_filesystem_source(root, max_bytes=4096))[1]

    assert run() == {FS_TABLE: 7}  # 5 md + 1 html + the too-large txt (listed, not read)
    assert run() == {}  # unchanged folder: zero rows extracted, normalized or loaded

    os.utime(root / "doc0.md")  # a plain `touch`: mtime = now, content unchanged
    assert run() == {FS_TABLE: 1}

    (root / "doc2.md").write_text("# Doc 2\n\nedited\n")
    _bump_mtime(root / "doc2.md")
    assert run() == {FS_TABLE: 1}
    assert run() == {}

    (root / "new.txt").write_text("brand new")
    _bump_mtime(root / "new.txt", 10)
    assert run() == {FS_TABLE: 1}

    con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    try:
        rows = con.execute(
            f"SELECT relative_path, too_large, content FROM raw.{FS_TABLE} ORDER BY relative_path"
        ).fetchall()
    finally:
        con.close()
    by_path = {path: (too_large, content) for path, too_large, content in rows}
    assert len(rows) == 8  # merge on relative_path: the edit replaced its row, no duplicate
    assert by_path["doc2.md"] == (False, b"# Doc 2\n\nedited\n")
    assert by_path["huge.txt"] == (True, None)
    assert "ignored.bin" not in by_path
    assert "nested/page.html" in by_path


def test_deleted_files_show_only_in_the_current_listing(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    for name in ("a.md", "b.md"):
        (root / name).write_text(name)
    settings = Settings(home=tmp_path / "home")
    pipeline = make_pipeline(settings.warehouse_target(), "fs_delete_test")
    assert run_pipeline(pipeline, make_filesystem_source(root))[1] == {FS_TABLE: 2}
    (root / "b.md").unlink()
    assert run_pipeline(pipeline, make_filesystem_source(root))[1] == {}
    assert list_current_files(root) == {"a.md"}


def test_a_file_copied_in_with_an_old_mtime_is_still_loaded(tmp_path: Path) -> None:
    """cp -p / rsync -a / tar -x keep old mtimes: a max-mtime cursor would lose such files."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "recent.md").write_text("# Recent\n")
    settings = Settings(home=tmp_path / "home")
    pipeline = make_pipeline(settings.warehouse_target(), "fs_old_mtime_test")
    assert run_pipeline(pipeline, make_filesystem_source(root))[1] == {FS_TABLE: 1}

    old = root / "archived.md"
    old.write_text("# Archived long ago\n")
    last_year = time.time() - 365 * 24 * 3600
    os.utime(old, (last_year, last_year))
    assert run_pipeline(pipeline, make_filesystem_source(root))[1] == {FS_TABLE: 1}
    assert run_pipeline(pipeline, make_filesystem_source(root))[1] == {}
