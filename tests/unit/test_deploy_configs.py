"""Every DAGSTER_HOME/dagster.yaml we ship passes Dagster's own instance-config validation.

``dagster_instance_config`` is what ``DagsterInstance.get()`` runs on a DAGSTER_HOME: the
instance schema (storage, run coordinator, run launcher, concurrency, telemetry, ...), the
concurrency rules (pool limits, granularity, run-queue conflicts) and the storage rules. It does
not import the configured classes. Kubernetes (dagster-k8s) and Celery (dagster-celery) are not
installed here, so for those the launcher/executor is checked by shape: the ``module``/``class``
strings the file names. The classes that *are* installed (the queued run coordinator, the
Postgres storage) also get their own ``config`` blocks validated against their config types.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator

from llmops_dagster.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
SHIPPED = {
    "deploy/dagster.postgres.yaml",
    "deploy/dagster.postgres-celery.yaml",
    "deploy/dagster.k8s.yaml",
    "dagster_home/dagster.yaml",
}


def _validated(path: Path, tmp_path: Path) -> dict:
    home = tmp_path / path.stem
    home.mkdir()
    shutil.copy(path, home / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    return dict(config)


def test_every_shipped_instance_file_is_listed() -> None:
    found = {str(p.relative_to(PROJECT_ROOT)) for p in DEPLOY.glob("dagster*.yaml")}
    assert found | {"dagster_home/dagster.yaml"} == SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_instance_file_passes_dagster_validation(name: str, tmp_path: Path) -> None:
    config = _validated(PROJECT_ROOT / name, tmp_path)
    assert config["telemetry"] == {"enabled": False}


def test_postgres_file_queues_runs_in_parallel_on_postgres(tmp_path: Path) -> None:
    config = _validated(DEPLOY / "dagster.postgres.yaml", tmp_path)
    db = config["storage"]["postgres"]["postgres_db"]
    # Every connection value comes from the environment, never written into the file.
    assert {key: db[key] for key in ("hostname", "port", "username", "password", "db_name")} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }
    # psycopg2 is what dagster-postgres installs; a bare postgresql:// means psycopg 3 to
    # SQLAlchemy 2.1.
    assert db["scheme"] == "postgresql+psycopg2"
    coordinator = config["run_coordinator"]
    assert (coordinator["module"], coordinator["class"]) == (
        "dagster.core.run_coordinator",
        "QueuedRunCoordinator",
    )
    checked = validate_config(QueuedRunCoordinator.config_type(), coordinator.get("config") or {})
    assert checked.success, checked.errors
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 4
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    assert config["nux"] == {"enabled": False}


def test_k8s_file_names_the_k8s_launcher_by_shape(tmp_path: Path) -> None:
    config = _validated(DEPLOY / "dagster.k8s.yaml", tmp_path)
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert launcher["config"]["job_namespace"] == "llmops"
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_celery_file_queues_runs_on_postgres(tmp_path: Path) -> None:
    config = _validated(DEPLOY / "dagster.postgres-celery.yaml", tmp_path)
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    # The Celery executor is chosen per job (not in dagster.yaml): the file names it.
    assert "dagster_celery.celery_executor" in (DEPLOY / "dagster.postgres-celery.yaml").read_text()


def test_validation_catches_a_broken_file(tmp_path: Path) -> None:
    """The check can fail: a misspelt key and a coordinator limit that conflicts with
    ``concurrency > runs`` are both refused by the same loader."""
    broken = yaml.safe_load((DEPLOY / "dagster.postgres.yaml").read_text())
    broken["concurrency"]["runs"]["max_concurent_runs"] = 2
    path = tmp_path / "misspelt.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(DagsterInvalidConfigError, match="max_concurent_runs"):
        _validated(path, tmp_path)

    conflicting = yaml.safe_load((DEPLOY / "dagster.postgres.yaml").read_text())
    conflicting["run_coordinator"]["config"] = {"max_concurrent_runs": 2}
    path = tmp_path / "conflict.yaml"
    path.write_text(yaml.safe_dump(conflicting))
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        _validated(path, tmp_path)
