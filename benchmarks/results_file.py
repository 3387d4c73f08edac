"""Writing a results file: atomically (``llmops_dagster.files.atomic_write_json``), stamped with
the git revision it measured (``llmops_dagster.provenance.code_version``: the ``-dirty`` rule
is documented there), keeping the headline figures of the last runs.

Why a history: on a small shared machine one run's ratio is one draw from a noisy distribution.
:func:`write_results` appends the run's headline figures (with its git revision and time) to the
``history`` list already in the file and keeps the last :data:`HISTORY_LENGTH`, so a report can
quote the last three runs instead of a chosen one. Everything else in the file is replaced by
the new run: no key survives from an earlier run or from a hand edit.

Only committed code is measured: a checkout with changes (``-dirty``) gets no results file, and
a history entry of such a run (left by an older version of this module) is not carried on —
its figures belong to code nobody can check out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops_dagster.files import atomic_write_json
from llmops_dagster.provenance import code_version

#: Runs kept in a results file's ``history``.
HISTORY_LENGTH = 3

REPO_ROOT = Path(__file__).resolve().parents[1]


class DirtyCheckoutError(RuntimeError):
    """The benchmark ran on uncommitted code: commit, then run it again."""


def is_dirty(revision: str) -> bool:
    return revision.endswith("-dirty")


def previous_history(path: Path) -> list[dict[str, Any]]:
    """The ``history`` list of an existing results file, runs of committed code only ([] if
    none, or unreadable)."""
    try:
        history = json.loads(path.read_text(encoding="utf-8")).get("history")
    except (OSError, ValueError, AttributeError):
        return []
    return (
        [
            entry
            for entry in history
            if isinstance(entry, dict) and not is_dirty(str(entry.get("git_sha", "")))
        ]
        if isinstance(history, list)
        else []
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
    Raises :class:`DirtyCheckoutError` (writing nothing) when ``root`` has uncommitted changes.
    """
    revision = code_version(root)
    if is_dirty(revision):
        raise DirtyCheckoutError(
            f"{root} has uncommitted changes ({revision}): {path.name} is written only from "
            "committed code; commit, then run the benchmark again (the table above is not saved)"
        )
    entry = {
        "git_sha": revision,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **headline,
    }
    history = [*previous_history(path), entry][-history_length:]
    out = {**data, "git_sha": revision, "history": history}
    atomic_write_json(path, out)
    return out
