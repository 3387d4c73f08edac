"""One MLflow run per asset materialization, linked to its upstream runs: the lineage chain.

Every run carries the same tags, so any score can be walked back through the runs of the
index, embeddings, chunks and documents it was computed from, to the code version and the
dlt loads:

- ``dagster.run_id``, ``dagster.asset_key``, ``dagster.partition``
- ``code.version`` (:func:`llmops_dagster.provenance.code_version`: the git sha of the
  checkout, ``-dirty`` when it has uncommitted changes)
- ``upstream.<asset_key>`` = the MLflow run id of that upstream asset's latest materialization
"""

from __future__ import annotations

from collections.abc import Mapping

from llmops_dagster.provenance import code_version

TAG_DAGSTER_RUN = "dagster.run_id"
TAG_ASSET_KEY = "dagster.asset_key"
TAG_PARTITION = "dagster.partition"
TAG_CODE_VERSION = "code.version"
UPSTREAM_TAG_PREFIX = "upstream."


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
