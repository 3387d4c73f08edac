from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmops_dagster.config import OFFLINE_ENV_DEFAULTS, PROJECT_ROOT, Settings

pytestmark = pytest.mark.unit


def test_offline_defaults_are_applied_on_import() -> None:
    for key in OFFLINE_ENV_DEFAULTS:
        assert key in os.environ, key
    assert os.environ["DEEPEVAL_TELEMETRY_OPT_OUT"] == "YES"
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_defaults_live_under_the_project_and_ignore_HOME(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/somewhere/else")
    for var in ("ELASTICSEARCH_URL", "MLFLOW_TRACKING_URI", "LLMOPS_HOME", "LLMOPS_DUCKDB_PATH"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    assert settings.llmops_home == PROJECT_ROOT / ".llmops"
    assert settings.effective_mlflow_uri == f"sqlite:///{PROJECT_ROOT / '.llmops/mlflow/mlflow.db'}"
    assert settings.effective_duckdb_path == PROJECT_ROOT / ".llmops/warehouse.duckdb"
    assert not settings.uses_external_es
    assert settings.effective_es_url == "http://127.0.0.1:9200"


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ELASTICSEARCH_URL", " https://es.example.internal:9243/ ")
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", "secret-key")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    monkeypatch.setenv("LLMOPS_EMBEDDING_MODEL", "sentence-transformers/all-mpnet-base-v2")
    settings = Settings()
    assert settings.uses_external_es
    assert settings.effective_es_url == "https://es.example.internal:9243"
    assert settings.elasticsearch_api_key is not None
    assert "secret-key" not in repr(settings)  # secrets never print
    assert settings.effective_mlflow_uri == "http://mlflow.internal:5000"
    assert settings.effective_duckdb_path == tmp_path / "warehouse.duckdb"
    assert settings.embedding_model == "sentence-transformers/all-mpnet-base-v2"


def test_packaged_models_are_found() -> None:
    settings = Settings()
    embedding = Path(settings.embedding_model)
    assert (embedding / "config.json").is_file()
    assert (embedding / "model.safetensors").is_file()
    generator = Path(settings.generator_model)
    assert settings.generator_gguf_file is not None
    assert (generator / settings.generator_gguf_file).is_file()
