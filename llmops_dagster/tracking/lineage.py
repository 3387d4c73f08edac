"""One MLflow run per asset materialization, linked to its upstream runs: the lineage chain.

Every run carries the same tags, so any score can be walked back through the runs of the
index, embeddings, chunks and documents it was computed from, to the code version and the
dlt loads:

- ``dagster.run_id``, ``dagster.asset_key``, ``dagster.partition``
- ``code.version`` (git sha of the checkout, ``-dirty`` when it has uncommitted changes)
- ``upstream.<asset_key>`` = the MLflow run id of that upstream asset's latest materialization
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from llmops_dagster.config import PROJECT_ROOT

TAG_DAGSTER_RUN = "dagster.run_id"
TAG_ASSET_KEY = "dagster.asset_key"
TAG_PARTITION = "dagster.partition"
TAG_CODE_VERSION = "code.version"
UPSTREAM_TAG_PREFIX = "upstream."


@lru_cache(maxsize=4)
def code_version(root: Path = PROJECT_ROOT) -> str:
    """The git sha of the checkout (``-dirty`` if modified), else the package version."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        from llmops_dagster import __version__

        return f"package-{__version__}"


def lineage_tags(
    *,
    asset_key: str,
    dagster_run_id: str,
    partition: str | None = None,
    upstream_runs: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The tags that make a run one link of the chain (see the module docstring)."""
    return {
        TAG_DAGSTER_RUN: dagster_run_id,
        TAG_ASSET_KEY: asset_key,
        TAG_PARTITION: partition or "",
        TAG_CODE_VERSION: code_version(),
        **{f"{UPSTREAM_TAG_PREFIX}{key}": run for key, run in (upstream_runs or {}).items()},
    }
