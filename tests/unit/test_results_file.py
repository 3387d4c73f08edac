"""benchmarks/results_file.py: results come only from committed code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import results_file

pytestmark = pytest.mark.unit


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "code.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "code.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    return repo


def test_a_checkout_with_changes_gets_no_results_file(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "code.py").write_text("x = 2\n")
    out = tmp_path / "bench.json"
    with pytest.raises(results_file.DirtyCheckoutError, match="commit, then run"):
        results_file.write_results(out, {"ratio": 1.0}, {"ratio": 1.0}, root=repo)
    assert not out.exists()


def test_history_keeps_only_runs_of_committed_code(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    out = tmp_path / "bench.json"
    old = [
        {"git_sha": "a" * 40 + "-dirty", "ratio": 0.5},
        {"git_sha": "b" * 40, "ratio": 0.7},
    ]
    out.write_text(json.dumps({"history": old}))
    written = results_file.write_results(out, {"ratio": 0.9}, {"ratio": 0.9}, root=repo)
    shas = [entry["git_sha"] for entry in written["history"]]
    assert shas == ["b" * 40, written["git_sha"]]
    assert not written["git_sha"].endswith("-dirty")
    assert [entry["ratio"] for entry in written["history"]] == [0.7, 0.9]
