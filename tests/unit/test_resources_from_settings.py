"""Each resource is built from settings by its own ``from_settings``; secrets are ``dg.EnvVar``
references exactly where the configuration needs them; values that used to get lost on the way
from the settings to the library arrive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llmops_dagster.config import Settings
from llmops_dagster.resources import (
    RESOURCE_TYPES,
    DatasetsResource,
    ElasticsearchResource,
    ModelsResource,
    TextResource,
    WarehouseResource,
    build_resources,
)

pytestmark = pytest.mark.unit

OPENAI = {
    "generator_backend": "openai",
    "generator_base_url": "http://llm.test/v1",
    "generator_remote_model": "qwen2.5-7b-instruct",
    "generator_api_key_env": "TEST_GENERATOR_KEY",
}
JUDGE = {"base_url": "http://judge.test/v1", "model": "judge-7b", "api_key_env": "TEST_JUDGE_KEY"}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("TEST_GENERATOR_KEY", "TEST_JUDGE_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return Settings(home=tmp_path).override(
        elasticsearch={"url": None, "api_key": None, "username": None, "password": None},
        warehouse={"url": None},
        models={"generator_backend": "local"},
        judge={"kind": "none", "base_url": None, "model": None},
    )


def _run_with_models(models: ModelsResource) -> dict[str, Any]:
    """Materialize one asset that reads the models resource as a run sees it."""
    seen: dict[str, Any] = {}

    @dg.asset
    def probe(models: ModelsResource) -> None:
        seen["generator"] = models.generator_spec()
        seen["judge"] = models.judge_spec()

    result = dg.materialize([probe], resources={"models": models}, raise_on_error=False)
    seen["success"] = result.success
    return seen


def test_build_resources_is_each_resources_from_settings(settings: Settings) -> None:
    built = build_resources(settings, with_dlt=False)
    assert set(built) == set(RESOURCE_TYPES)
    for key, resource_type in RESOURCE_TYPES.items():
        assert built[key] == resource_type.from_settings(settings), key


def test_text_and_datasets_resources_hold_what_their_names_say(settings: Settings) -> None:
    changed = settings.override(
        corpus={"redact_pii": False, "chunk_size_tokens": 120, "train_groups": "hr,finance"}
    )
    built = build_resources(changed, with_dlt=False)
    assert built["text"] == TextResource(
        redact_pii=False, chunk_size_tokens=120, chunk_overlap_tokens=32
    )
    assert built["datasets"] == DatasetsResource(
        train_qa_path=str(changed.corpus.train_qa_path),
        train_groups=["hr", "finance"],
        golden_path=str(changed.corpus.golden_path),
        datasets_dir=str(changed.home / "datasets"),
    )
    assert "corpus" not in built


def test_a_local_setup_without_keys_has_no_env_var_and_runs(settings: Settings) -> None:
    models = build_resources(settings, with_dlt=False)["models"]
    assert (models.generator_api_key, models.judge_api_key) == (None, None)
    seen = _run_with_models(models)
    assert seen["success"]
    assert seen["generator"].backend == "local" and seen["judge"].endpoint is None


def test_an_openai_setup_reads_its_keys_when_the_run_starts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The definitions load without the keys (a code server that does not hold them) ...
    models = build_resources(settings.override(models=OPENAI, judge=JUDGE), with_dlt=False)[
        "models"
    ]
    assert models.generator_api_key == dg.EnvVar("TEST_GENERATOR_KEY")
    assert models.judge_api_key == dg.EnvVar("TEST_JUDGE_KEY")
    # ... and the run worker has them.
    monkeypatch.setenv("TEST_GENERATOR_KEY", "gen-secret")
    monkeypatch.setenv("TEST_JUDGE_KEY", "judge-secret")
    seen = _run_with_models(models)
    assert seen["success"]
    assert seen["generator"].openai.api_key == "gen-secret"
    assert seen["judge"].endpoint.api_key == "judge-secret"


def test_an_openai_run_without_its_key_fails_naming_the_variable(settings: Settings) -> None:
    models = build_resources(settings.override(models=OPENAI), with_dlt=False)["models"]
    with pytest.raises(dg.DagsterInvalidConfigError, match="TEST_GENERATOR_KEY"):
        _run_with_models(models)


def test_an_empty_key_variable_name_means_a_keyless_endpoint(settings: Settings) -> None:
    keyless = settings.override(models={**OPENAI, "generator_api_key_env": ""})
    models = build_resources(keyless, with_dlt=False)["models"]
    assert models.generator_api_key is None
    seen = _run_with_models(models)
    assert seen["success"] and seen["generator"].openai.api_key is None


def test_the_cli_resolves_the_keys_itself(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_GENERATOR_KEY", "gen-secret")
    models = build_resources(
        settings.override(models=OPENAI, judge=JUDGE), with_dlt=False, resolve_secrets=True
    )["models"]
    assert models.generator_api_key == "gen-secret"
    assert models.judge_api_key is None  # configured, but not set in this process


def test_a_run_config_judge_openai_finds_the_configured_endpoint(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmops_dagster.evaluate.candidate import judge_spec_for_run

    # The default judge is none; a rag_evaluation run with `judge: openai` (its run config goes
    # through judge_spec_for_run) must find the endpoint judge_base_url/judge_model configure.
    models = build_resources(settings.override(judge=JUDGE), with_dlt=False)["models"]
    monkeypatch.setenv("TEST_JUDGE_KEY", "judge-secret")
    seen = _run_with_models(models)
    assert seen["success"] and seen["judge"].kind == "none"
    asked = judge_spec_for_run(seen["judge"], kind="openai")
    assert asked.endpoint is not None
    assert (asked.endpoint.base_url, asked.endpoint.model) == ("http://judge.test/v1", "judge-7b")
    assert asked.endpoint.api_key == "judge-secret"


def test_the_models_device_reaches_the_embedder(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in loader records the arguments: the device that matters (a GPU) is not here.
    calls: list[dict[str, Any]] = []

    def record(model_id: str, **kwargs: Any) -> str:
        calls.append({"model_id": model_id, **kwargs})
        return "embedder"

    monkeypatch.setattr("llmops_dagster.embed.model.load_embedder", record)
    models = build_resources(settings, with_dlt=False)["models"]
    on_gpu = ModelsResource(**{**models.model_dump(), "device": "cuda:1"})
    assert on_gpu.embedder() == "embedder"
    assert calls[0]["device"] == "cuda:1"
    assert models.local_model_spec().device is None  # the generator's default, for contrast


def test_a_password_in_the_warehouse_url_reaches_the_run_as_an_env_var(
    settings: Settings,
) -> None:
    secret = settings.override(warehouse={"url": "postgresql://u:pw@h:5432/db"})
    assert build_resources(secret, with_dlt=False)["warehouse"].url == dg.EnvVar(
        "LLMOPS_WAREHOUSE_URL"
    )
    resolved = WarehouseResource.from_settings(secret, resolve_secrets=True)
    assert resolved.url == "postgresql://u:pw@h:5432/db"


def test_settings_connection_specs_are_the_resources_own(settings: Settings) -> None:
    es = settings.override(elasticsearch={"url": "https://a:9200,https://b:9200"})
    resource = ElasticsearchResource.from_settings(es, resolve_secrets=True)
    assert es.cluster_spec() == resource.cluster_spec()
    assert settings.warehouse_target() == WarehouseResource.from_settings(settings).dlt_target()


def test_the_loaders_pool_comes_from_the_warehouse_resource(settings: Settings) -> None:
    from assets.ingest import WAREHOUSE_WRITERS_POOL
    from llmops_dagster.definitions import build_assets
    from llmops_dagster.sources.source_config import FilesystemSourceConfig, SourcesConfig

    sources = SourcesConfig(filesystem=FilesystemSourceConfig(root=settings.home))
    duck = WarehouseResource.from_settings(settings)
    postgres = WarehouseResource(**{**duck.model_dump(), "url": "postgresql://u@127.0.0.1:1/db"})
    # The settings say DuckDB; the warehouse the assets run with decides.
    (on_postgres,) = [
        a for a in build_assets(settings, sources, postgres) if a.node_def.name == "ingest_fs"
    ]
    (on_duck,) = [
        a for a in build_assets(settings, sources, duck) if a.node_def.name == "ingest_fs"
    ]
    assert (on_duck.node_def.pool, on_postgres.node_def.pool) == (WAREHOUSE_WRITERS_POOL, None)
