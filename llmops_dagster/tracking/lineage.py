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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmops_dagster.config import PROJECT_ROOT
from llmops_dagster.tracking.store import MlflowStore

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


@dataclass(frozen=True)
class DatasetRef:
    """A dataset an asset read or wrote, logged with ``mlflow.log_input``."""

    name: str
    digest: str
    source: str
    rows: Sequence[Mapping[str, Any]] = ()
    context: str = "input"


@dataclass
class AssetRun:
    run_id: str
    experiment_id: str
    url: str
    tags: dict[str, str] = field(default_factory=dict)


def _mlflow_dataset(frame: Any, dataset: DatasetRef) -> Any:
    """A pandas dataset whose source is a local path when it is one, else a tagged URI.

    MLflow resolves string sources through a registry that knows files and object stores but
    not e.g. ``duckdb://`` tables; those are recorded as a code source tagged with the URI.
    """
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.data.from_pandas(
            frame, source=dataset.source, name=dataset.name, digest=dataset.digest
        )
    except MlflowException:
        return mlflow.data.from_pandas(
            frame,
            source=CodeDatasetSource(tags={"uri": dataset.source}),
            name=dataset.name,
            digest=dataset.digest,
        )


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def log_asset_run(
    store: MlflowStore,
    *,
    asset_key: str,
    dagster_run_id: str,
    partition: str | None = None,
    upstream_runs: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    datasets: Sequence[DatasetRef] = (),
    ui_url: str = "http://127.0.0.1:5000",
) -> AssetRun:
    """Record one materialization as a finished MLflow run and return where it is."""
    import mlflow
    import pandas as pd

    all_tags = {
        TAG_DAGSTER_RUN: dagster_run_id,
        TAG_ASSET_KEY: asset_key,
        TAG_PARTITION: partition or "",
        TAG_CODE_VERSION: code_version(),
        **{f"{UPSTREAM_TAG_PREFIX}{key}": run for key, run in (upstream_runs or {}).items()},
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    mlflow.set_tracking_uri(store.tracking_uri)
    run_name = f"{asset_key.replace('/', '.')}-{dagster_run_id[:8]}"
    with mlflow.start_run(
        experiment_id=store.experiment_id, run_name=run_name, tags=all_tags
    ) as run:
        if params:
            # MLflow params are immutable strings of bounded length: keep them short and flat.
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for dataset in datasets:
            frame = pd.DataFrame(list(dataset.rows)) if dataset.rows else pd.DataFrame()
            mlflow.log_input(_mlflow_dataset(frame, dataset), context=dataset.context)
    return AssetRun(
        run_id=run.info.run_id,
        experiment_id=store.experiment_id,
        url=run_url(ui_url, store.experiment_id, run.info.run_id),
        tags=all_tags,
    )
