from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmops_dagster.config import (
    OFFLINE_ENV_DEFAULTS,
    PROJECT_ROOT,
    SERVER_ENV_DEFAULTS,
    Settings,
    apply_offline_env_defaults,
    apply_server_env_defaults,
    child_env,
)

pytestmark = pytest.mark.unit


def test_offline_defaults_are_applied_where_the_process_starts() -> None:
    # conftest applied them at session start, as the CLI and the code location do.
    for key in OFFLINE_ENV_DEFAULTS:
        assert key in os.environ, key
    assert os.environ["DEEPEVAL_TELEMETRY_OPT_OUT"] == "YES"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["DEEPEVAL_CACHE_FOLDER"] == str(Settings().home / "deepeval")


def test_importing_the_package_changes_nothing_in_the_environment() -> None:
    code = (
        "import json, os; before = dict(os.environ); "
        "import llmops_dagster, llmops_dagster.config, llmops_dagster.resources, "
        "llmops_dagster.evaluate, llmops_dagster.rag.pipeline; "
        "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))"
    )
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV_DEFAULTS}
    env.pop("DEEPEVAL_CACHE_FOLDER", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_apply_offline_env_defaults_keeps_what_the_user_exported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("DEEPEVAL_CACHE_FOLDER")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    apply_offline_env_defaults(tmp_path)
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["DEEPEVAL_CACHE_FOLDER"] == str(tmp_path / "deepeval")


def test_override_replaces_fields_of_groups_and_refuses_unknown_fields(tmp_path: Path) -> None:
    base = Settings()
    changed = base.override(
        home=tmp_path, elasticsearch={"index_alias": "a1"}, models={"torch_threads": 3}
    )
    assert (changed.home, changed.elasticsearch.index_alias) == (tmp_path, "a1")
    assert changed.models.torch_threads == 3
    assert changed.duckdb_path == tmp_path / "warehouse.duckdb"
    assert base.elasticsearch.index_alias == "llmops-chunks"  # the original is untouched
    with pytest.raises(ValueError, match="llmops_home"):
        Settings(llmops_home=tmp_path)


def test_defaults_live_under_the_project_and_ignore_HOME(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/somewhere/else")
    for var in ("ELASTICSEARCH_URL", "MLFLOW_TRACKING_URI", "LLMOPS_HOME", "LLMOPS_DUCKDB_PATH"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    assert settings.home == PROJECT_ROOT / ".llmops"
    assert settings.mlflow_uri == f"sqlite:///{PROJECT_ROOT / '.llmops/mlflow/mlflow.db'}"
    assert settings.duckdb_path == PROJECT_ROOT / ".llmops/warehouse.duckdb"
    assert not settings.uses_external_es
    assert settings.es_url == "http://127.0.0.1:9200"


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ELASTICSEARCH_URL", " https://es.example.internal:9243/ ")
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", "secret-key")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    monkeypatch.setenv("LLMOPS_EMBEDDING_MODEL", "sentence-transformers/all-mpnet-base-v2")
    settings = Settings()
    assert settings.uses_external_es
    assert settings.es_url == "https://es.example.internal:9243"
    assert settings.elasticsearch.api_key is not None
    assert "secret-key" not in repr(settings)  # secrets never print
    assert settings.mlflow_uri == "http://mlflow.internal:5000"
    assert settings.duckdb_path == tmp_path / "warehouse.duckdb"
    assert settings.models.embedding_model == "sentence-transformers/all-mpnet-base-v2"


def test_packaged_models_are_found() -> None:
    settings = Settings()
    embedding = Path(settings.models.embedding_model)
    assert (embedding / "config.json").is_file()
    assert (embedding / "model.safetensors").is_file()
    generator = Path(settings.models.generator_model)
    assert settings.models.generator_gguf_file is not None
    assert (generator / settings.models.generator_gguf_file).is_file()


def test_llmops_home_is_read_like_every_other_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    assert Settings().home == tmp_path
    monkeypatch.setenv("LLMOPS_HOME", "")  # exported but empty: the default, as before
    assert Settings().home == PROJECT_ROOT / ".llmops"


def test_what_local_services_read_is_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert Settings().dagster_home == PROJECT_ROOT / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    monkeypatch.setenv("LLMOPS_PG_BIN", str(tmp_path / "pg"))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    settings = Settings()
    assert settings.dagster_home == tmp_path / "dh"
    assert settings.local_postgres.bin_dir == tmp_path / "pg"
    assert settings.local_node.default_java_home == tmp_path / "jdk"


def test_child_env_adds_and_drops_without_touching_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Dx=1")
    env = child_env(drop=("JAVA_TOOL_OPTIONS",), ES_JAVA_HOME="/jdk")
    assert env["ES_JAVA_HOME"] == "/jdk" and "JAVA_TOOL_OPTIONS" not in env
    assert env["HF_HUB_OFFLINE"] == os.environ["HF_HUB_OFFLINE"]  # inherited
    assert os.environ["JAVA_TOOL_OPTIONS"] == "-Dx=1" and "ES_JAVA_HOME" not in os.environ


def test_server_defaults_make_mlflow_fail_fast_and_keep_exported_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in SERVER_ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    apply_server_env_defaults()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"


def test_only_the_named_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # Variables named like fields (common in shells and containers) set nothing.
    for name, value in {
        "PORT": "1234",
        "HOST": "0.0.0.0",
        "URL": "postgresql://u@elsewhere/db",
        "MODEL": "judge-from-nowhere",
        "HOME": "/somewhere/else",
        "KIND": "openai",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("LLMOPS_HOME", "DAGSTER_HOME", "LLMOPS_ES_PORT", "LLMOPS_SERVE_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.local_node.port, settings.serving.port) == (9200, 8000)
    assert settings.serving.host == "127.0.0.1"
    assert (settings.elasticsearch.url, settings.warehouse.url) == (None, None)
    assert (settings.judge.model, settings.judge.kind) == (None, "none")
    assert settings.home == PROJECT_ROOT / ".llmops"
    assert settings.dagster_home == PROJECT_ROOT / "dagster_home"
