"""A throw-away serving stack on real engines, for the server tests and the load benchmark:
an ``mlflow server`` process (SQLite backend, proxied artifacts), the sample corpus indexed by
the real assets under a fresh alias, the prompt and two bundles registered (the local LLM and
the extractive answerer, so a champion swap is visible in every response), and an
``llmops-dagster serve`` process pointed at all of it. The MLflow server can run MLflow's auth
app (users and per-experiment permissions), with the serving process on its own account.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from llmops_dagster.config import PROJECT_ROOT, Settings, child_env
from llmops_dagster.evaluate.gate import current_alias_version
from llmops_dagster.models.spec import GeneratorPin
from llmops_dagster.rag.bundle import (
    DEFAULT_BUNDLE_MODEL,
    BundleVersion,
    RagBundle,
    register_bundle,
    set_bundle_alias,
)


class ProcessFailed(RuntimeError):
    """A process of the stack exited or never answered (its log's tail is in the message)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProcessFailed(f"{url}: exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ProcessFailed(f"{url} never answered in {seconds:.0f} s:\n{log.read_text()[-4000:]}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@dataclass(frozen=True)
class MlflowAccount:
    """A user of an ``mlflow server --app-name basic-auth``; clients authenticate with
    MLflow's standard variables (:meth:`env`)."""

    username: str
    password: str

    def env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
        }

    @classmethod
    def new(cls, username: str) -> MlflowAccount:
        return cls(username, secrets.token_urlsafe(24))


def _auth_config(folder: Path, admin: MlflowAccount) -> Path:
    """The auth app's configuration: its user store beside the tracking store, ``admin``
    created on the first start, and MLflow's default READ for every user on experiments
    nobody granted anything on. Credential checks are cached (MLflow's opt-in): a
    PBKDF2 check per request costs ~0.4 s on these machines, per trace export and poll."""
    path = folder / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
        f"admin_username = {admin.username}\n"
        f"admin_password = {admin.password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 600\n"
    )
    path.chmod(0o600)
    return path


def start_mlflow_server(
    folder: Path,
    *,
    backend_store_uri: str | None = None,
    admin: MlflowAccount | None = None,
) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on a free loopback port; (process, tracking URI) once it answers.

    The backend store is SQLite in ``folder`` unless ``backend_store_uri`` names another
    database (e.g. ``postgresql://user@host:port/db``, what deploy/mlflow-server.sh runs);
    artifacts are always proxied by the server into ``folder/artifacts``, so clients need no
    access to the artifact store themselves. With ``admin`` the server runs MLflow's auth app
    (``--app-name basic-auth``): every request needs a user (:func:`add_mlflow_user`), and
    experiments carry per-user permissions.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "mlflow-server.log"
    backend = backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}"
    env = child_env()
    auth_args: list[str] = []
    if admin is not None:
        auth_args = ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_config(folder, admin))
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)  # CSRF of the signup page
    proc = subprocess.Popen(
        [_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend,
         "--artifacts-destination", str(folder / "artifacts"), *auth_args],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", 180, proc, log)
    except ProcessFailed:
        stop_process(proc)
        raise
    return proc, uri


def add_mlflow_user(
    tracking_uri: str,
    admin: MlflowAccount,
    username: str,
    *,
    experiments: dict[str, str] | None = None,
) -> MlflowAccount:
    """Create ``username`` on a basic-auth server (as ``admin``) with a random password, and
    grant it ``experiments`` (experiment id → READ / EDIT / MANAGE / NO_PERMISSIONS)."""
    auth = (admin.username, admin.password)
    account = MlflowAccount.new(username)
    created = httpx.post(
        f"{tracking_uri}/api/2.0/mlflow/users/create",
        json={"username": username, "password": account.password},
        auth=auth,
        timeout=30,
    )
    created.raise_for_status()
    for experiment_id, permission in (experiments or {}).items():
        granted = httpx.post(
            f"{tracking_uri}/api/3.0/mlflow/users/permissions/grant",
            json={"username": username, "resource_type": "experiment",
                  "resource_id": experiment_id, "permission": permission},
            auth=auth,
            timeout=30,
        )  # fmt: skip
        granted.raise_for_status()
    return account


def register_test_bundles(
    settings: Settings, *, llm_tokens: int = 24, k: int = 2
) -> dict[str, BundleVersion]:
    """The repo prompt and two bundles (``llm``, ``extractive``) on ``settings``' alias;
    ``llm`` becomes the champion."""
    import mlflow

    from llmops_dagster.rag.extractive import ExtractiveAnswerer
    from llmops_dagster.rag.prompt_registry import sync_prompt
    from llmops_dagster.rag.prompts import load_prompt
    from llmops_dagster.resources import build_resources
    from llmops_dagster.search.aliases import current_index
    from llmops_dagster.tracking.mlflow_store import ensure_mlflow, mlflow_client
    from llmops_dagster.tracking.runs import open_run

    uri = settings.mlflow_uri
    store = ensure_mlflow(uri, settings.mlflow.experiment)
    client = mlflow_client(uri)
    mlflow.set_tracking_uri(uri)  # the prompt registry uses MLflow's fluent state
    prompt = sync_prompt(client, load_prompt())
    resources = build_resources(settings, with_dlt=False, resolve_secrets=True)
    es = resources["elasticsearch"]
    common = {
        "prompt_uri": prompt.uri,
        "prompt_version": prompt.content_hash,
        "retrieval_mode": "hybrid_rrf",
        "retrieval_k": k,
        "embedding_model_id": settings.models.embedding_model,
        "index_name": current_index(es.get_client(), es.alias) or "",
        "index_alias": es.alias,
    }
    bundles: dict[str, BundleVersion] = {}
    pins = {
        "llm": resources["models"].generator_pin(),
        "extractive": GeneratorPin("builtin", ExtractiveAnswerer().model_id),
    }
    for kind, tokens in (("llm", llm_tokens), ("extractive", 64)):
        generator = RagBundle.generator_fields(pins[kind])
        bundle = RagBundle(**generator, adapter_uri=None, max_new_tokens=tokens, **common)
        with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
            bundles[kind] = register_bundle(client, bundle, run=run)
    promote(client, bundles["llm"], "testbed: first champion")
    return bundles


def promote(client: object, version: BundleVersion, why: str) -> None:
    """Test scaffolding: make ``version`` champion over whatever holds the alias now."""
    set_bundle_alias(
        client,  # type: ignore[arg-type]
        DEFAULT_BUNDLE_MODEL,
        version.version,
        "champion",
        evaluation_run_id=version.run_id or "",
        decision_summary=why,
        expected_champion=current_alias_version(client, DEFAULT_BUNDLE_MODEL, "champion"),  # type: ignore[arg-type]
    )


def serve_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes ``llmops-dagster serve`` read ``settings``."""
    values = {
        "LLMOPS_HOME": str(settings.home),
        "LLMOPS_ES_INDEX_ALIAS": settings.elasticsearch.index_alias,
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "LLMOPS_MODELS_CACHE": str(settings.models_cache_dir),
        "LLMOPS_DUCKDB_PATH": str(settings.duckdb_path),
        "LLMOPS_TRACE_EXPERIMENT": settings.serving.trace_experiment,
        "LLMOPS_BUNDLE_POLL_S": str(settings.serving.bundle_poll_s),
        "LLMOPS_TORCH_THREADS": str(settings.models.torch_threads),
        "LLMOPS_RATE_LIMIT_PER_MIN": str(settings.serving.rate_limit_per_minute),
        "LLMOPS_RATE_LIMIT_BURST": str(settings.serving.rate_limit_burst),
        **extra,
    }
    if settings.elasticsearch.url:
        values["ELASTICSEARCH_URL"] = settings.elasticsearch.url
    return child_env(**values)


@dataclass
class ServerHandle:
    url: str
    proc: subprocess.Popen
    log: Path


@contextmanager
def serve_process(settings: Settings, log: Path, **extra_env: str) -> Iterator[ServerHandle]:
    """``llmops-dagster serve`` on a free port, stopped on exit."""
    port = free_port()
    proc = subprocess.Popen(
        [_bin("llmops-dagster"), "serve", "--port", str(port)],
        cwd=PROJECT_ROOT, env=serve_env(settings, **extra_env),
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", 300, proc, log)
        yield ServerHandle(url, proc, log)
    finally:
        stop_process(proc)


def index_sample_corpus(settings: Settings, sample_dir: Path) -> None:
    """ingest → prepare → index of the sample corpus with the real assets, with the sample's
    audiences (its confidential folders are readable by hr / security only)."""
    import dagster as dg

    from llmops_dagster.definitions import build_asset_checks, build_assets, build_resources
    from llmops_dagster.sources.source_config import default_sources_config

    sources = default_sources_config(sample_dir)
    result = dg.materialize(
        [*build_assets(settings, sources), *build_asset_checks()],
        selection=dg.AssetSelection.groups("ingest", "prepare", "index"),
        resources=build_resources(settings),
    )
    if not result.success:
        raise ProcessFailed("indexing the sample corpus failed")
