"""The MLflow tracking store: SQLite + local artifacts by default, or any tracking URI.

:func:`mlflow_client` is the one place an ``MlflowClient`` is built: every caller gets the same
tracking *and* registry URI. (A client built with only a tracking URI takes its registry URI
from the environment or MLflow's default, so a process with another ``MLFLOW_REGISTRY_URI``
would register bundles in one store and read runs from another.)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from llmops_dagster.files import file_lock

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class MlflowUnavailable(RuntimeError):
    """The tracking store cannot be used; the message names the setting."""


@dataclass(frozen=True)
class MlflowStore:
    tracking_uri: str
    artifact_location: str | None
    experiment_id: str
    experiment_name: str


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """A client of the store at ``tracking_uri``, whose model registry lives in the same store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _check_http(uri: str) -> None:
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise MlflowUnavailable(
            f"MLflow tracking server at MLFLOW_TRACKING_URI={uri} is not reachable ({exc}). "
            "Start it, fix the URI, or unset MLFLOW_TRACKING_URI to use the local SQLite store."
        ) from exc


def _first_use_lock(uri: str) -> contextlib.AbstractContextManager[None]:
    """Serialise the first use of a SQLite store across processes: MLflow creates its tables on
    first use, and two parallel steps doing that at once fail ("table ... already exists").
    Server and other database stores handle concurrency themselves."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return file_lock(Path(uri.removeprefix("sqlite:///")).with_suffix(".init.lock"))


def ensure_mlflow(tracking_uri: str, experiment: str) -> MlflowStore:
    """Create (if needed) the store and the project's experiment; fail fast with the setting.

    For SQLite stores the experiment's artifact location is pinned to ``artifacts/`` beside the
    database file (LLMOPS_HOME/mlflow by default).
    """
    uri = tracking_uri
    artifact_location: str | None = None
    if uri.startswith("sqlite:///"):
        # Artifacts next to the database, never in a stray ./mlruns of the working directory.
        db_path = Path(uri.removeprefix("sqlite:///"))
        artifact_root = db_path.parent / "artifacts"
        artifact_root.mkdir(parents=True, exist_ok=True)
        artifact_location = artifact_root.as_uri()
    elif uri.startswith(("http://", "https://")):
        _check_http(uri)
    client = mlflow_client(uri)
    try:
        with _first_use_lock(uri):
            found = client.get_experiment_by_name(experiment)
            if found is None:
                experiment_id = client.create_experiment(
                    experiment, artifact_location=artifact_location
                )
            else:
                experiment_id = found.experiment_id
                artifact_location = found.artifact_location
    except Exception as exc:  # MLflow raises many types here (sqlalchemy, rest, io)
        raise MlflowUnavailable(
            f"MLflow store MLFLOW_TRACKING_URI={uri} cannot be used: {type(exc).__name__}: {exc}"
        ) from exc
    return MlflowStore(
        tracking_uri=uri,
        artifact_location=artifact_location,
        experiment_id=experiment_id,
        experiment_name=experiment,
    )
