"""`pytest -m unit` starts no service: the rules in tests/support/tiers.py, on a throw-away
test project that uses this suite's conftest (its fixtures and hooks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.unit

TWO_ENGINES = """
import pytest

pytestmark = pytest.mark.unit


def test_both_engines(warehouse) -> None:
    assert warehouse.scalar("SELECT 1") == 1


def test_plain() -> None:
    pass
"""

ASKS_ON_THE_FLY = """
import pytest

pytestmark = pytest.mark.unit


def test_asks_for_postgres(request) -> None:
    request.getfixturevalue("postgres")
"""

NAMES_A_SERVICE = """
import pytest

pytestmark = pytest.mark.unit


def test_uses_elasticsearch(es_client) -> None:
    pass
"""


def _project(folder: Path, **modules: str) -> Path:
    folder.mkdir()
    (folder / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (folder / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    unit: u\n    integration: i\naddopts = -p no:cacheprovider\n"
    )
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(text)
    return folder


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(folder)])}
    quiet = [f"-pno:{name}" for name in ("deepeval", "xdist", "rerunfailures", "repeat")]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *quiet, *args],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_integration_variant_of_a_unit_test_is_left_out_and_services_are_refused(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path / "project", test_two=TWO_ENGINES, test_on_the_fly=ASKS_ON_THE_FLY)
    ran = _pytest(project, "-v", "-m", "unit")
    out = ran.stdout
    assert "1 failed, 2 passed, 1 deselected" in out, out
    assert "test_two.py::test_both_engines[duckdb] PASSED" in out
    assert "test_two.py::test_plain PASSED" in out
    assert "[postgres]" not in out  # the deselected one: PostgreSQL, an integration test
    assert "test_on_the_fly.py::test_asks_for_postgres is marked unit but starts PostgreSQL" in out


def test_a_unit_test_that_names_a_service_fixture_is_a_collection_error(tmp_path: Path) -> None:
    project = _project(tmp_path / "project", test_named=NAMES_A_SERVICE)
    ran = _pytest(project, "-q", "--collect-only", "-m", "unit")
    assert ran.returncode == pytest.ExitCode.USAGE_ERROR, ran.stdout + ran.stderr
    assert (
        "test_named.py::test_uses_elasticsearch is marked unit but uses Elasticsearch" in ran.stderr
    )
