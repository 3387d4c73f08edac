"""Writing a results file: atomically, stamped with the git revision it measured, keeping the
headline figures of the last runs.

Why a history: on a small shared machine one run's ratio is one draw from a noisy distribution.
:func:`write_results` appends the run's headline figures (with its git revision and time) to the
``history`` list already in the file and keeps the last :data:`HISTORY_LENGTH`, so a report can
quote the last three runs instead of a chosen one. Everything else in the file is replaced by
the new run: no key survives from an earlier run or from a hand edit.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Runs kept in a results file's ``history``.
HISTORY_LENGTH = 3

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_revision(root: Path) -> str:
    """``git rev-parse HEAD`` of ``root``, with ``-dirty`` when the checkout has changes
    (tracked or untracked); ``unknown`` outside a git checkout. Takes no index lock."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, env=env
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON via a temp file in the same folder + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def previous_history(path: Path) -> list[dict[str, Any]]:
    """The ``history`` list of an existing results file ([] if none, or unreadable)."""
    try:
        history = json.loads(path.read_text(encoding="utf-8")).get("history")
    except (OSError, ValueError, AttributeError):
        return []
    return (
        [entry for entry in history if isinstance(entry, dict)] if isinstance(history, list) else []
    )


def write_results(
    path: Path,
    data: Mapping[str, Any],
    headline: Mapping[str, Any],
    *,
    root: Path = REPO_ROOT,
    history_length: int = HISTORY_LENGTH,
) -> dict[str, Any]:
    """Write ``data`` + ``git_sha`` + ``history`` (last runs' ``headline``) to ``path``.

    ``headline`` is the few figures a report quotes (ratios, nDCG@10): each history entry holds
    them with the run's ``git_sha`` and ``finished_at`` (UTC). Returns what was written.
    """
    revision = git_revision(root)
    entry = {
        "git_sha": revision,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **headline,
    }
    history = [*previous_history(path), entry][-history_length:]
    out = {**data, "git_sha": revision, "history": history}
    write_json_atomic(path, out)
    return out
