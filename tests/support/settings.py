"""Settings for a test: every store in a folder of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops_dagster.config import Settings
from tests.support.tracking import sqlite_store


def isolated_settings(home: Path, **groups: dict[str, Any]) -> Settings:
    """Settings whose stores all live in ``home`` (created): the DuckDB warehouse, an MLflow
    SQLite store (a copy of the session's empty one) unless ``mlflow`` names a tracking URI,
    dlt state and caches — all but the project's model cache, so that the converted model is
    reused. ``groups`` override fields as ``Settings.override`` does."""
    home.mkdir(parents=True, exist_ok=True)
    project = Settings()
    stores: dict[str, dict[str, Any]] = {
        "warehouse": {"duckdb_path": home / "warehouse.duckdb"},
        "models": {"cache_dir": project.models_cache_dir},
    }
    if "tracking_uri" not in groups.get("mlflow", {}):
        stores["mlflow"] = {"tracking_uri": sqlite_store(home / "mlflow" / "mlflow.db")}
    return project.override(home=home, **stores).override(**groups)
