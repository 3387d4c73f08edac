"""llmops_dagster.provenance: one git-revision rule (``-dirty`` on changed tracked files and on
untracked files that are not ignored), used by lineage tags and results files alike."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llmops_dagster import __version__
from llmops_dagster.provenance import code_version, git_revision

pytestmark = pytest.mark.unit


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / ".gitignore").write_text("data/\n")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_outside_a_checkout_there_is_no_revision_and_the_package_version_stands_in(
    tmp_path: Path,
) -> None:
    assert git_revision(tmp_path) is None
    assert code_version(tmp_path) == f"package-{__version__}"


def test_a_clean_checkout_is_its_sha(repo: Path) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    assert len(sha) == 40 and git_revision(repo) == sha


def test_ignored_files_do_not_make_it_dirty(repo: Path) -> None:
    (repo / "data").mkdir()
    (repo / "data" / "big.duckdb").write_text("rows")
    assert git_revision(repo) == _git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("change", ["edit_tracked", "stage_edit", "new_untracked"])
def test_changed_and_new_files_make_it_dirty(repo: Path, change: str) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    if change == "new_untracked":
        (repo / "b.py").write_text("y = 2\n")  # a module not yet added changes what runs
    else:
        (repo / "a.py").write_text("x = 2\n")
        if change == "stage_edit":
            _git(repo, "add", "a.py")
    assert git_revision(repo) == f"{sha}-dirty"


def test_this_checkout_has_a_revision() -> None:
    revision = code_version()
    sha = revision.removesuffix("-dirty")
    assert len(sha) == 40 and all(c in "0123456789abcdef" for c in sha)
