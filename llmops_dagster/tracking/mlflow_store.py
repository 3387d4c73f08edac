"""The MLflow tracking store: SQLite + local artifacts by default, or any tracking URI."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class MlflowUnavailable(RuntimeError):
    """The tracking store cannot be used; the message names the setting."""


@dataclass(frozen=True)
class MlflowStore:
    tracking_uri: str
    artifact_location: str | None
    experiment_id: str
    experiment_name: str


def _check_http(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise MlflowUnavailable(
            f"MLflow tracking server at MLFLOW_TRACKING_URI={uri} is not reachable ({exc}). "
            "Start it, fix the URI, or unset MLFLOW_TRACKING_URI to use the local SQLite store."
        ) from exc


@contextmanager
def _first_use_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store across processes: MLflow creates its tables on
    first use, and two parallel steps doing that at once fail ("table ... already exists").
    Server and other database stores handle concurrency themselves."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(uri.removeprefix("sqlite:///")).with_suffix(".init.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_mlflow(tracking_uri: str, experiment: str) -> MlflowStore:
    """Create (if needed) the store and the project's experiment; fail fast with the setting.

    For SQLite stores the experiment's artifact location is pinned to ``artifacts/`` beside the
    database file (LLMOPS_HOME/mlflow by default).
    """
    from mlflow.tracking import MlflowClient

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
    client = MlflowClient(tracking_uri=uri)
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
