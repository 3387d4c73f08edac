"""Which code produced a result: the git revision of the checkout, or the package version.

One rule for every record that names its code (MLflow lineage tags ``code.version``, the
benchmarks' results files ``git_sha``), so two records with the same revision really come from
the same code:

- ``<40-hex sha>``: the checkout is exactly that commit;
- ``<sha>-dirty``: ``git status --porcelain`` lists something: a tracked file changed (staged or
  not) *or* an untracked file that is not ignored. Untracked files count because a new module
  not yet added changes what runs while the sha does not; ignored files (data, caches, the
  virtual environment, results) do not count;
- :func:`code_version` falls back to ``package-<version>`` outside a git checkout (an installed
  wheel), where :func:`git_revision` returns None.

Git is asked with ``--no-optional-locks`` so a status check never takes the index lock a
concurrent ``git`` command of the user needs.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from llmops_dagster.config import PROJECT_ROOT

DIRTY_SUFFIX = "-dirty"


def git_revision(root: Path = PROJECT_ROOT) -> str | None:
    """``<sha>`` or ``<sha>-dirty`` of the checkout at ``root``; None outside a git checkout
    (or without git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}{DIRTY_SUFFIX}" if dirty else sha


@lru_cache(maxsize=4)
def code_version(root: Path = PROJECT_ROOT) -> str:
    """:func:`git_revision`, else ``package-<version>``. Cached per process: the code a process
    runs does not change under it (an edit needs a restart to take effect)."""
    revision = git_revision(root)
    if revision is not None:
        return revision
    from llmops_dagster import __version__

    return f"package-{__version__}"
