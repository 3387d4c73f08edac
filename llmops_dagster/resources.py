"""Dagster resources: each owns the configuration of one concern and the client it makes.

Configuration flows one way: environment → ``config.Settings`` → ``definitions.build_resources``
→ these fields (secrets as ``dg.EnvVar`` references, resolved only at run time) → explicit
arguments or spec objects into the library. No resource reads the environment or a settings
object at run time, so a value set on a resource is the value the code uses. Clients and models
are made lazily, on first use in a run, and kept for that run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr

from llmops_dagster.config import Settings
from llmops_dagster.models.spec import (
    GeneratorPin,
    GeneratorSpec,
    JudgeSpec,
    LocalModelSpec,
    OpenAIEndpointSpec,
)
from llmops_dagster.search.client import ClusterSpec
from llmops_dagster.tracking.lineage import lineage_tags
from llmops_dagster.tracking.runs import MLFLOW_RUN_ID, MLFLOW_RUN_URL, DatasetRef, RunHandle

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from llmops_dagster.embed.model import Embedder
    from llmops_dagster.models.base import Generator
    from llmops_dagster.rag.bundle import RagBundle
    from llmops_dagster.rag.extractive import ExtractiveAnswerer
    from llmops_dagster.rag.pipeline import RagPipeline, RetrievalSettings
    from llmops_dagster.rag.prompts import PromptTemplate
    from llmops_dagster.tracking.mlflow_store import MlflowStore
    from llmops_dagster.warehouse import Warehouse


class WarehouseResource(DuckDBResource):
    """The warehouse dlt loads into and the pipeline's own tables (schema ``llmops``) live in:
    the DuckDB file ``database`` by default, the PostgreSQL database ``url`` when set.

    Still a Dagster ``DuckDBResource`` (``database`` = the file), with two changes for the
    one-writer rule: the connection is closed even when the body raises (the base class closes
    it only on success, leaving the file locked for the next asset in the same process), and
    it retries a file locked by another process for up to a minute (the ``duckdb`` pool
    serialises writers within one Dagster instance; the retry covers other processes).
    ``get_connection`` yields a :class:`~llmops_dagster.warehouse.Warehouse` adapter for either
    engine (on DuckDB it also answers the plain connection's methods).
    """

    dlt_dataset: str = Field(default="raw", description="dlt dataset (schema) of raw tables.")
    dlt_pipelines_dir: str = Field(description="Where dlt keeps pipeline state (cursors).")
    url: str | None = Field(
        default=None,
        description="postgresql://… (LLMOPS_WAREHOUSE_URL; use dg.EnvVar when it holds a "
        "password); unset: the DuckDB file `database`.",
    )

    @property
    def path(self) -> Path:
        return Path(self.database)

    @property
    def kind(self) -> str:
        from llmops_dagster.warehouse import warehouse_kind

        return warehouse_kind(self.url or None)

    @property
    def location(self) -> str:
        """Where the tables are, safe to show (lineage): the file, or the URL sans password."""
        return self.dlt_target().location

    lock_wait_s: float = Field(
        default=60.0, description="How long to wait for another process's write lock."
    )

    @contextmanager
    def get_connection(self) -> Iterator[Warehouse]:
        from llmops_dagster.warehouse import connect_warehouse

        with connect_warehouse(
            url=self.url or None, duckdb_path=self.path, wait_s=self.lock_wait_s
        ) as con:
            yield con

    def dlt_target(self) -> Any:
        from llmops_dagster.sources.dlt_pipelines import WarehouseTarget

        return WarehouseTarget(
            duckdb_path=self.path,
            dataset=self.dlt_dataset,
            pipelines_dir=Path(self.dlt_pipelines_dir),
            url=self.url or None,
        )


class ElasticsearchResource(dg.ConfigurableResource):
    """The search cluster and the layout of the versioned indices behind ``index_alias``.

    Anchor: an ``EnvVar`` for every secret; the client is made on first use and checked
    (``_cluster/health``) so an unreachable cluster fails fast, naming the setting.
    """

    url: str = Field(default="http://127.0.0.1:9200", description="Cluster URL.")
    api_key: str | None = Field(default=None, description="Use dg.EnvVar('ELASTICSEARCH_API_KEY').")
    username: str | None = None
    password: str | None = Field(default=None, description="Use dg.EnvVar(...).")
    ca_certs: str | None = Field(default=None, description="CA bundle for https clusters.")
    verify_certs: bool = True
    index_alias: str = Field(default="llmops-chunks", description="Alias queries go through.")
    keep_versions: int = Field(default=2, description="Old indices kept for rollback.")
    shards: int = 1
    replicas: int = Field(default=0, description="0 on one node; ≥ 1 on a cluster.")
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    request_timeout_s: float = 30.0

    _client: Any = PrivateAttr(default=None)

    @property
    def alias(self) -> str:
        return self.index_alias

    def cluster_spec(self) -> ClusterSpec:
        return ClusterSpec(
            url=self.url.rstrip("/"),
            api_key=self.api_key or None,
            username=self.username or None,
            password=self.password or None,
            ca_certs=self.ca_certs or None,
            verify_certs=self.verify_certs,
            hint=(
                f"the elasticsearch resource's url is {self.url} (ELASTICSEARCH_URL; unset means "
                "the local node, started by `llmops-dagster services up`)"
            ),
        )

    def get_client(self) -> Elasticsearch:
        """A checked client: fails fast with the setting to fix if the cluster is unreachable."""
        if self._client is None:
            from llmops_dagster.search.client import check_cluster, make_client

            spec = self.cluster_spec()
            client = make_client(spec, request_timeout=self.request_timeout_s)
            check_cluster(client, spec)
            self._client = client
        return self._client

    def index_layout(self) -> dict[str, int]:
        """Keyword arguments of ``search.sync.sync_index`` that shape new indices."""
        return {
            "keep": self.keep_versions,
            "shards": self.shards,
            "replicas": self.replicas,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.hnsw_ef_construction,
        }


class MlflowResource(dg.ConfigurableResource):
    """Tracking store + registry, and the one way assets write their lineage run.

    Every asset records its materialization through :meth:`asset_run` (or the shorthand
    :meth:`log_asset_run`): this resource owns the lineage tags (Dagster run, asset key,
    partition, code version, upstream MLflow runs), the run URL and the metadata keys.
    """

    tracking_uri: str = Field(description="sqlite:///… (default, local) or http(s)://server.")
    experiment: str = Field(default="llmops-dagster", description="MLflow experiment name.")
    ui_url: str = Field(
        default="http://127.0.0.1:5000", description="Where the MLflow UI answers (links)."
    )

    _store: Any = PrivateAttr(default=None)

    def store(self) -> MlflowStore:
        """The store and experiment, created if needed; fails fast naming the tracking URI."""
        if self._store is None:
            from llmops_dagster.tracking.mlflow_store import ensure_mlflow

            self._store = ensure_mlflow(self.tracking_uri, self.experiment)
        return self._store

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.store().tracking_uri)

    @staticmethod
    def upstream_runs(context: dg.AssetExecutionContext) -> dict[str, str]:
        """MLflow run ids recorded in the latest materialization of each upstream asset."""
        found: dict[str, str] = {}
        deps: set[dg.AssetKey] = set()
        for key in context.selected_asset_keys:
            deps |= set(context.assets_def.asset_deps.get(key, set()))
        for key in sorted(deps, key=lambda k: k.to_user_string()):
            event = context.instance.get_latest_materialization_event(key)
            materialization = event.asset_materialization if event else None
            value = materialization.metadata.get(MLFLOW_RUN_ID) if materialization else None
            if value is not None:
                found[key.to_user_string()] = str(value.value)
        return found

    @contextmanager
    def asset_run(
        self,
        context: dg.AssetExecutionContext,
        *,
        asset_key: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Iterator[RunHandle]:
        """An MLflow run for this materialization, tagged as a link of the lineage chain;
        ended FINISHED, or FAILED when the body raises."""
        from llmops_dagster.tracking.runs import open_run

        key = asset_key or context.asset_key.to_user_string()
        all_tags = {
            **lineage_tags(
                asset_key=key,
                dagster_run_id=context.run_id,
                partition=context.partition_key if context.has_partition_key else None,
                upstream_runs=self.upstream_runs(context),
            ),
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        run_name = f"{key.replace('/', '.')}-{context.run_id[:8]}"
        with open_run(self.store(), run_name=run_name, tags=all_tags, ui_url=self.ui_url) as run:
            yield run
        context.log.info(f"MLflow run {run.run_id}: {run.url}")

    def log_asset_run(
        self,
        context: dg.AssetExecutionContext,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        datasets: Sequence[DatasetRef] = (),
        asset_key: str | None = None,
    ) -> dict[str, Any]:
        """Log one materialization and return the metadata entries that link to its run."""
        with self.asset_run(context, asset_key=asset_key, tags=tags) as run:
            run.log(params=params, metrics=metrics, datasets=datasets)
        return self.run_metadata(run)

    @staticmethod
    def run_metadata(run: RunHandle) -> dict[str, Any]:
        """The metadata keys that link a materialization to its MLflow run."""
        return {MLFLOW_RUN_ID: run.run_id, MLFLOW_RUN_URL: dg.MetadataValue.url(run.url)}


class ModelsResource(dg.ConfigurableResource):
    """Embedding model, generator (local or OpenAI-compatible), judge, adapters, threads."""

    embedding_model: str = Field(description="sentence-transformers id or folder.")
    embedding_backend: str = Field(default="torch", description="torch | onnx-int8")
    embed_batch_size: int = 64
    generator_backend: str = Field(default="local", description="local | openai")
    generator_model: str = Field(description="HF id or folder (local backend).")
    generator_gguf_file: str | None = None
    generator_base_url: str | None = Field(default=None, description="…/v1 (openai backend).")
    generator_remote_model: str | None = None
    generator_api_key: str | None = Field(default=None, description="Use dg.EnvVar(...).")
    generator_temperature: float = Field(default=0.0, description="0 = greedy.")
    generator_repetition_penalty: float = Field(
        default=1.1, description="Local backend only (the OpenAI API has none)."
    )
    torch_threads: int = Field(default=1, description="torch intra-op threads.")
    device: str | None = Field(default=None, description="cpu / cuda; default: cuda if found.")
    cache_dir: str = Field(description="Converted models, ONNX exports, downloaded adapters.")
    adapter_model_name: str = Field(
        default="llmops-generator-lora", description="Registered model name of the adapters."
    )
    lora_max_steps: int = 8
    judge: str = Field(default="none", description="none | local | openai")
    judge_capable: bool = Field(default=False, description="May judge metrics gate?")
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key: str | None = Field(default=None, description="Use dg.EnvVar(...).")
    judge_max_new_tokens: int = 192

    def embedder(self) -> Embedder:
        from llmops_dagster.embed.model import load_embedder

        return load_embedder(
            self.embedding_model,
            backend=self.embedding_backend,
            cache_dir=Path(self.cache_dir),
            threads=self.torch_threads,
        )

    def tokenizer(self) -> Any:
        """The embedding model's tokenizer (chunk sizes are counted in its tokens)."""
        from llmops_dagster.embed.model import load_tokenizer

        return load_tokenizer(self.embedding_model)

    def local_model_spec(self) -> LocalModelSpec:
        return LocalModelSpec(
            model=self.generator_model,
            gguf_file=self.generator_gguf_file or None,
            cache_dir=Path(self.cache_dir),
            threads=max(1, self.torch_threads),
            device=self.device,
        )

    def base_model_id(self) -> str:
        """The portable id of the local base model (what adapters and bundles record)."""
        from llmops_dagster.models.source import resolve_model_source

        return resolve_model_source(self.generator_model, self.generator_gguf_file or None).model_id

    def generator_spec(self) -> GeneratorSpec:
        if self.generator_backend == "openai":
            from llmops_dagster.models.base import GeneratorConfigError

            if not self.generator_base_url or not self.generator_remote_model:
                raise GeneratorConfigError(
                    "generator_backend=openai needs generator_base_url and "
                    "generator_remote_model (LLMOPS_GENERATOR_BASE_URL, "
                    "LLMOPS_GENERATOR_REMOTE_MODEL)"
                )
            return GeneratorSpec(
                backend="openai",
                openai=OpenAIEndpointSpec(
                    base_url=self.generator_base_url,
                    model=self.generator_remote_model,
                    api_key=self.generator_api_key or None,
                ),
            )
        if self.generator_backend != "local":
            from llmops_dagster.models.base import GeneratorConfigError

            raise GeneratorConfigError(
                f"generator_backend={self.generator_backend!r}: expected local or openai "
                "(LLMOPS_GENERATOR_BACKEND)"
            )
        return GeneratorSpec(backend="local", local=self.local_model_spec())

    def generator(
        self, *, adapter_uri: str | None = None, tracking_uri: str | None = None
    ) -> Generator:
        """The configured generator; with ``adapter_uri`` (``models:/name/3``, ``@alias``)
        the local base + that registered LoRA adapter."""
        from llmops_dagster.models import load_generator

        spec = self.generator_spec()
        decoding = (
            {"repetition_penalty": self.generator_repetition_penalty}
            if spec.backend == "local"
            else {}
        )
        return load_generator(spec, adapter_uri=adapter_uri, tracking_uri=tracking_uri, **decoding)

    def generator_pin(self) -> GeneratorPin:
        """The generator these settings make, pinned by value (what a new bundle records):
        the local base model's id and weights digest, or the endpoint's model name; and the
        decoding settings."""
        if self.generator_backend == "openai":
            spec = self.generator_spec().openai
            assert spec is not None
            return GeneratorPin("openai", spec.model, "", self.generator_temperature, 1.0)
        self.generator_spec()  # validates the backend name
        from llmops_dagster.models.source import resolve_model_source, weights_digest

        source = resolve_model_source(self.generator_model, self.generator_gguf_file or None)
        return GeneratorPin(
            "local",
            source.model_id,
            weights_digest(source),
            self.generator_temperature,
            self.generator_repetition_penalty,
        )

    def generator_location(self) -> dict[str, str]:
        """Where this resource's generator comes from (recorded with a bundle, so that the
        bundle keeps answering after the settings move on): not part of any key."""
        if self.generator_backend == "openai":
            return {"base_url": self.generator_base_url or ""}
        return {"model": self.generator_model, "gguf_file": self.generator_gguf_file or ""}

    def pinned_generator(
        self,
        pin: GeneratorPin,
        *,
        adapter_uri: str | None = None,
        tracking_uri: str | None = None,
        recorded_location: Mapping[str, str] | None = None,
    ) -> Generator:
        """Exactly the generator ``pin`` describes, or :class:`GeneratorConfigError` saying
        why this process cannot reproduce it (never a different model in its place).

        Local: the configured model when its id and weights digest match, else the location
        recorded when the bundle was evaluated (the settings may have moved on to a new
        candidate), checked the same way. OpenAI-compatible: the configured endpoint (else the
        recorded one) must list the pinned model name; requests name that model.
        """
        from llmops_dagster.models import load_generator
        from llmops_dagster.models.base import GeneratorConfigError

        recorded = dict(recorded_location or {})
        if pin.backend == "openai":
            base_url = self.generator_base_url or recorded.get("base_url") or ""
            if not base_url:
                raise GeneratorConfigError(
                    f"this bundle is answered by {pin.model!r} on an OpenAI-compatible "
                    "endpoint, and no endpoint is configured (LLMOPS_GENERATOR_BASE_URL)"
                )
            from llmops_dagster.models.openai_client import require_served_model

            spec = OpenAIEndpointSpec(
                base_url=base_url, model=pin.model, api_key=self.generator_api_key or None
            )
            require_served_model(spec)
            return load_generator(GeneratorSpec(backend="openai", openai=spec))
        if pin.backend != "local":
            raise GeneratorConfigError(f"generator backend {pin.backend!r} is not a model")
        from llmops_dagster.models.source import resolve_model_source, weights_digest

        tried: list[str] = []
        candidates = [(self.generator_model, self.generator_gguf_file or None, "configured")]
        if recorded.get("model"):
            candidates.append((recorded["model"], recorded.get("gguf_file") or None, "recorded"))
        for model, gguf_file, origin in candidates:
            try:
                source = resolve_model_source(model, gguf_file)
                digest = weights_digest(source)
            except GeneratorConfigError as exc:
                tried.append(f"{origin} {model}: {exc}")
                continue
            if source.model_id == pin.model and digest == pin.weights_digest:
                spec = replace(self.local_model_spec(), model=model, gguf_file=gguf_file)
                return load_generator(
                    GeneratorSpec(backend="local", local=spec),
                    adapter_uri=adapter_uri,
                    tracking_uri=tracking_uri,
                    repetition_penalty=pin.repetition_penalty,
                )
            tried.append(f"{origin} {source.display}: {source.model_id} {digest[:19]}…")
        raise GeneratorConfigError(
            f"cannot reproduce this bundle's generator {pin.model} (weights "
            f"{pin.weights_digest[:19]}…): {'; '.join(tried)}. Point LLMOPS_GENERATOR_MODEL / "
            "LLMOPS_GENERATOR_GGUF_FILE at those weights, or evaluate a new candidate bundle."
        )

    def base_model(self, *, fresh: bool = False) -> Any:
        """The local base model + tokenizer (``fresh``: a private copy, e.g. for training)."""
        from llmops_dagster.models.local import load_base_model

        return load_base_model(self.local_model_spec(), fresh=fresh)

    def judge_spec(self) -> JudgeSpec:
        # The endpoint whenever one is configured, whatever the default kind: a run that asks
        # for `judge: openai` must find it.
        endpoint = None
        if self.judge_base_url and self.judge_model:
            endpoint = OpenAIEndpointSpec(
                base_url=self.judge_base_url,
                model=self.judge_model,
                api_key=self.judge_api_key or None,
                timeout_s=120.0,
            )
        return JudgeSpec(
            kind=self.judge,  # type: ignore[arg-type]
            capable=self.judge_capable,
            endpoint=endpoint,
            max_new_tokens=self.judge_max_new_tokens,
        )


class CorpusResource(dg.ConfigurableResource):
    """How text is prepared, and the QA files fine-tuning and evaluation read."""

    redact_pii: bool = Field(default=True, description="Redact PII before chunking.")
    chunk_size_tokens: int = Field(default=200, description="Embedding-tokenizer tokens.")
    chunk_overlap_tokens: int = 32
    train_qa_path: str = Field(description="QA JSONL for the SFT dataset (never golden).")
    train_groups: list[str] = Field(
        default_factory=list,
        description="The training audience (empty: public): training items and context it may "
        "not read are left out, since the adapter is served to everyone using its bundle.",
    )
    golden_path: str = Field(description="Golden QA JSONL or BEIR folder.")
    datasets_dir: str = Field(description="Where built SFT datasets are written.")


class ServingResource(dg.ConfigurableResource):
    """What the HTTP service leaves behind for the serving loop: its store of answers and
    feedback (SQLite), the MLflow experiment of its traces, where feedback candidates are
    written for review, and the thresholds the serving checks warn at."""

    store_path: str = Field(description="SQLite file of served answers, feedback and reviews.")
    trace_experiment: str = Field(
        default="llmops-serving", description="MLflow experiment with one trace per answer."
    )
    candidates_path: str = Field(description="JSONL of feedback candidates for review.")
    p95_latency_ms: float = Field(default=15_000.0, description="Warn above this p95 latency.")
    max_thumbs_down_rate: float = Field(default=0.3, description="Of rated answers.")
    max_no_answer_rate: float = Field(
        default=0.2, description="Answers without a (relevant) retrieval hit."
    )
    max_score_drift: float = Field(
        default=0.25, description="Relative change of the mean top retrieval score."
    )
    trace_settle_s: float = Field(
        default=60.0,
        description="Load only traces and feedback at least this old, so rows that become "
        "visible out of order are not skipped by the incremental cursors.",
    )


class RunScopedIOManager(dg.ConfigurableIOManager):
    """Pickles an asset's value per run (``<base_dir>/<asset>/runs/<run id>.pickle``) and as the
    asset's latest value (``latest.pickle``).

    Why: Dagster's filesystem IO manager keeps one file per asset, so two runs of the same job
    at once overwrite each other's output, and a downstream step reads whichever run wrote last
    — ``champion_model`` of one evaluation would apply the *other* evaluation's decision. Here a
    step reads the value its own run produced; a step materialized alone (the upstream not in
    the run) reads the latest stored value, as with the default IO manager.
    """

    base_dir: str = Field(description="Folder of the stored values (under LLMOPS_HOME).")

    def _folder(self, key: dg.AssetKey) -> Path:
        return Path(self.base_dir).joinpath(*key.path)

    @staticmethod
    def _write(path: Path, payload: bytes) -> None:
        import os
        import tempfile

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        import pickle

        folder = self._folder(context.asset_key)
        payload = pickle.dumps(obj)
        self._write(folder / "runs" / f"{context.run_id}.pickle", payload)
        self._write(folder / "latest.pickle", payload)

    def load_input(self, context: dg.InputContext) -> Any:
        import pickle

        folder = self._folder(context.asset_key)
        path = folder / "latest.pickle"
        upstream = context.upstream_output
        try:
            run_id = upstream.run_id if upstream is not None else None
        except dg.DagsterInvariantViolationError:  # the upstream asset was not in this run
            run_id = None
        if run_id is not None and (folder / "runs" / f"{run_id}.pickle").is_file():
            path = folder / "runs" / f"{run_id}.pickle"
        return pickle.loads(path.read_bytes())


def build_rag_pipeline(
    elasticsearch: ElasticsearchResource,
    models: ModelsResource,
    mlflow: MlflowResource | None = None,
    *,
    adapter_uri: str | None = None,
    retrieval: RetrievalSettings | None = None,
    max_new_tokens: int | None = None,
    generator: Generator | ExtractiveAnswerer | None = None,
    prompt: PromptTemplate | None = None,
    bundle_uri: str | None = None,
    temperature: float | None = None,
) -> RagPipeline:
    """The one way to wire a RAG: the index alias's retriever, the configured embedder,
    the prompt (the repo's template unless given) and the configured generator (base, or base
    + ``adapter_uri``)."""
    from llmops_dagster.rag.answer import DEFAULT_MAX_NEW_TOKENS
    from llmops_dagster.rag.pipeline import RagPipeline, RetrievalSettings
    from llmops_dagster.rag.prompts import load_prompt
    from llmops_dagster.search.retriever import HybridRetriever

    retriever = HybridRetriever(elasticsearch.get_client(), elasticsearch.alias, models.embedder())
    if generator is None:
        tracking_uri = mlflow.store().tracking_uri if mlflow is not None else None
        generator = models.generator(adapter_uri=adapter_uri, tracking_uri=tracking_uri)
    return RagPipeline(
        retriever=retriever,
        generator=generator,
        prompt=prompt or load_prompt(),
        retrieval=retrieval or RetrievalSettings(),
        max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        temperature=models.generator_temperature if temperature is None else temperature,
        bundle_uri=bundle_uri,
    )


def build_bundle_pipeline(
    elasticsearch: ElasticsearchResource,
    models: ModelsResource,
    mlflow: MlflowResource,
    bundle: RagBundle,
    *,
    bundle_uri: str | None = None,
    recorded_tags: Mapping[str, str] | None = None,
) -> RagPipeline:
    """The pipeline a RAG bundle describes — exactly its prompt version (from MLflow's prompt
    registry), retriever settings, generator (its pinned backend, model and weights, adapter
    version and decoding; or the extractive answerer) and answer length — on the alias it was
    evaluated on. Serving and evaluation both use this, so what passed the comparison is what
    answers. A generator this process cannot reproduce is a :class:`GeneratorConfigError`,
    never a stand-in. ``recorded_tags``: the bundle version's tags (where its generator was
    loaded from when it was evaluated)."""
    import json

    from llmops_dagster.models.base import GeneratorConfigError
    from llmops_dagster.rag.bundle import TAG_GENERATOR_LOCATION
    from llmops_dagster.rag.extractive import ExtractiveAnswerer
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.rag.prompt_registry import require_prompt_hash

    if bundle.index_alias != elasticsearch.alias:
        raise GeneratorConfigError(
            f"bundle {bundle_uri or bundle.key()} was evaluated on the alias "
            f"{bundle.index_alias!r}, but the elasticsearch resource serves "
            f"{elasticsearch.alias!r} (LLMOPS_ES_INDEX_ALIAS)"
        )
    registered = require_prompt_hash(mlflow.client(), bundle.prompt_uri, bundle.prompt_version)
    generator: Generator | ExtractiveAnswerer
    if bundle.generator == "extractive":
        generator = ExtractiveAnswerer()
        if generator.model_id != bundle.base_model_id:
            raise GeneratorConfigError(
                f"bundle {bundle_uri or bundle.key()} was evaluated with {bundle.base_model_id}; "
                f"this code's extractive answerer is {generator.model_id}: evaluate a new bundle"
            )
    else:
        location = (recorded_tags or {}).get(TAG_GENERATOR_LOCATION)
        generator = models.pinned_generator(
            bundle.generator_pin,
            adapter_uri=bundle.adapter_uri,
            tracking_uri=mlflow.store().tracking_uri,
            recorded_location=json.loads(location) if location else None,
        )
    return build_rag_pipeline(
        elasticsearch,
        models,
        mlflow,
        retrieval=RetrievalSettings(
            mode=bundle.retrieval_mode, k=bundle.retrieval_k, metrics_depth=bundle.metrics_depth
        ),
        max_new_tokens=bundle.max_new_tokens,
        temperature=bundle.temperature,
        generator=generator,
        prompt=registered.template,
        bundle_uri=bundle_uri,
    )


def _warehouse_url(url: str | None, resolve_secrets: bool) -> Any:
    """The PostgreSQL URL as a resource field: a URL with a password is a secret, so it goes in
    as ``dg.EnvVar`` (never written into run config or the UI); one without stays readable."""
    if not url:
        return None
    from urllib.parse import urlsplit

    if urlsplit(url).password and not resolve_secrets:
        return dg.EnvVar("LLMOPS_WAREHOUSE_URL")
    return url


def build_resources(
    settings: Settings, *, with_dlt: bool = True, resolve_secrets: bool = False
) -> dict[str, Any]:
    """Every resource, each filled with its own group of ``settings`` (the one place where
    settings become resource fields; the CLI uses the same resources as the code location).

    Secrets are ``dg.EnvVar`` references, resolved by Dagster at run time and never written
    into run config or the UI. Outside Dagster (the CLI) nothing resolves an ``EnvVar``, so
    ``resolve_secrets=True`` puts the values themselves into the resource objects.
    """
    import os

    def _secret(value: Any, env_name: str) -> Any:
        if not value:
            return None
        if not resolve_secrets:
            return dg.EnvVar(env_name)
        return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)

    es, ml, models, judge, corpus = (
        settings.elasticsearch,
        settings.mlflow,
        settings.models,
        settings.judge,
        settings.corpus,
    )
    resources: dict[str, Any] = {
        "warehouse": WarehouseResource(
            database=str(settings.duckdb_path),
            dlt_dataset=settings.warehouse.dlt_dataset,
            dlt_pipelines_dir=str(settings.dlt_dir),
            url=_warehouse_url(settings.warehouse.url, resolve_secrets),
        ),
        "elasticsearch": ElasticsearchResource(
            url=settings.es_url,
            api_key=_secret(es.api_key, "ELASTICSEARCH_API_KEY"),
            username=es.username,
            password=_secret(es.password, "ELASTICSEARCH_PASSWORD"),
            ca_certs=str(es.ca_certs) if es.ca_certs else None,
            verify_certs=es.verify_certs,
            index_alias=es.index_alias,
            keep_versions=es.keep_versions,
            shards=es.shards,
            replicas=es.replicas,
            hnsw_m=es.hnsw_m,
            hnsw_ef_construction=es.hnsw_ef_construction,
        ),
        "mlflow": MlflowResource(
            tracking_uri=settings.mlflow_uri, experiment=ml.experiment, ui_url=ml.ui_url
        ),
        "models": ModelsResource(
            embedding_model=models.embedding_model,
            embedding_backend=models.embedding_backend,
            embed_batch_size=models.embed_batch_size,
            generator_backend=models.generator_backend,
            generator_model=models.generator_model,
            generator_gguf_file=models.generator_gguf_file,
            generator_base_url=models.generator_base_url,
            generator_remote_model=models.generator_remote_model,
            generator_api_key=_secret(
                os.environ.get(models.generator_api_key_env), models.generator_api_key_env
            ),
            generator_temperature=models.generator_temperature,
            generator_repetition_penalty=models.generator_repetition_penalty,
            torch_threads=models.torch_threads,
            cache_dir=str(settings.models_cache_dir),
            adapter_model_name=models.adapter_model_name,
            lora_max_steps=models.lora_max_steps,
            judge=judge.kind,
            judge_capable=judge.capable,
            judge_base_url=judge.base_url,
            judge_model=judge.model,
            judge_api_key=_secret(os.environ.get(judge.api_key_env), judge.api_key_env),
            judge_max_new_tokens=judge.max_new_tokens,
        ),
        "corpus": CorpusResource(
            redact_pii=corpus.redact_pii,
            chunk_size_tokens=corpus.chunk_size_tokens,
            chunk_overlap_tokens=corpus.chunk_overlap_tokens,
            train_qa_path=str(corpus.train_qa_path),
            train_groups=corpus.train_group_list,
            golden_path=str(corpus.golden_path),
            datasets_dir=str(settings.datasets_dir),
        ),
        # Evaluation outputs per run: concurrent evaluations never read each other's decision.
        "evaluation_io_manager": RunScopedIOManager(base_dir=str(settings.home / "dagster-io")),
        "serving": ServingResource(
            store_path=str(settings.serving_store_path),
            trace_experiment=settings.serving.trace_experiment,
            candidates_path=str(settings.home / "feedback" / "candidates.jsonl"),
            p95_latency_ms=settings.serving.p95_latency_ms,
            max_thumbs_down_rate=settings.serving.max_thumbs_down_rate,
            max_no_answer_rate=settings.serving.max_no_answer_rate,
            max_score_drift=settings.serving.max_score_drift,
            trace_settle_s=settings.serving.trace_settle_s,
        ),
    }
    if with_dlt:
        from dagster_dlt import DagsterDltResource

        resources["dlt"] = DagsterDltResource()
    return resources
