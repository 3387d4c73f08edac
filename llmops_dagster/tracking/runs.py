"""MLflow runs written through one explicit handle: no fluent, process-global active run.

Why: several assets materialize in one Dagster process (``execute_in_process``, the in-process
executor, tests). MLflow's fluent API keeps one *active run* per thread, so a run left open by
one asset, or a nested ``start_run``, silently attaches one asset's params to another's run.
Every write here names its run id through an ``MlflowClient``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmops_dagster.tracking.mlflow_store import MlflowStore, mlflow_client

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: Metadata keys every tracked materialization carries (the UI links and the lineage walk).
MLFLOW_RUN_ID = "mlflow_run_id"
MLFLOW_RUN_URL = "mlflow_run"


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass(frozen=True)
class DatasetRef:
    """A dataset an asset read or wrote, logged as an MLflow dataset input."""

    name: str
    digest: str
    source: str
    rows: Sequence[Mapping[str, Any]] = ()
    context: str = "input"


@dataclass
class RunHandle:
    """One open MLflow run and the client that writes it."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    artifact_uri: str
    url: str
    tags: dict[str, str] = field(default_factory=dict)

    def log(
        self,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        datasets: Sequence[DatasetRef] = (),
    ) -> None:
        """Params (short flat strings), metrics, tags and dataset inputs in one batch."""
        from mlflow.entities import Metric, Param, RunTag

        # MLflow params are immutable strings of bounded length: keep them short and flat.
        param_list = [Param(str(k), str(v)[:500]) for k, v in (params or {}).items()]
        metric_list = [Metric(str(k), float(v), _now_ms(), 0) for k, v in (metrics or {}).items()]
        tag_list = [RunTag(str(k), str(v)) for k, v in (tags or {}).items()]
        self.tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        # log_batch caps each call at 100 params / 1000 metrics: send in slices.
        for start in range(0, max(len(param_list), len(metric_list), len(tag_list)), 100):
            self.client.log_batch(
                self.run_id,
                metrics=metric_list[start : start + 100],
                params=param_list[start : start + 100],
                tags=tag_list[start : start + 100],
            )
        if datasets:
            self.client.log_inputs(self.run_id, datasets=[_dataset_input(d) for d in datasets])

    def log_dataframe_input(self, frame: Any, *, name: str, digest: str, source: str,
                            context: str) -> None:  # fmt: skip
        """A pandas frame (e.g. the golden set) as a dataset input with its digest."""
        self.client.log_inputs(
            self.run_id, datasets=[_frame_input(frame, name, digest, source, context)]
        )

    def log_table(self, frame: Any, artifact_file: str) -> None:
        self.client.log_table(self.run_id, data=frame, artifact_file=artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_json(self, data: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=str), artifact_file)

    def set_tag(self, key: str, value: Any) -> None:
        self.tags[key] = str(value)
        self.client.set_tag(self.run_id, key, str(value))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _frame_input(frame: Any, name: str, digest: str, source: str, context: str) -> Any:
    """A dataset input from a pandas frame; a source MLflow cannot resolve (``duckdb://``)
    is recorded as a code source tagged with the URI."""
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    with warnings.catch_warnings():
        # A local path matches two equivalent MLflow source types; it picks one and warns.
        warnings.simplefilter("ignore", UserWarning)
        try:
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)
        except MlflowException:
            dataset = mlflow.data.from_pandas(
                frame, source=CodeDatasetSource(tags={"uri": source}), name=name, digest=digest
            )
    return DatasetInput(
        dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]
    )


def _dataset_input(dataset: DatasetRef) -> Any:
    import pandas as pd

    frame = pd.DataFrame(list(dataset.rows)) if dataset.rows else pd.DataFrame()
    return _frame_input(frame, dataset.name, dataset.digest, dataset.source, dataset.context)


@contextmanager
def open_run(
    store: MlflowStore, *, run_name: str, tags: Mapping[str, str], ui_url: str
) -> Iterator[RunHandle]:
    """Create a run, yield its handle, and end it FINISHED (or FAILED if the body raised)."""
    client = mlflow_client(store.tracking_uri)
    run = client.create_run(store.experiment_id, run_name=run_name, tags=dict(tags))
    handle = RunHandle(
        client=client,
        run_id=run.info.run_id,
        experiment_id=store.experiment_id,
        artifact_uri=run.info.artifact_uri,
        url=run_url(ui_url, store.experiment_id, run.info.run_id),
        tags=dict(tags),
    )
    try:
        yield handle
    except BaseException:
        client.set_terminated(handle.run_id, "FAILED")
        raise
    client.set_terminated(handle.run_id, "FINISHED")
