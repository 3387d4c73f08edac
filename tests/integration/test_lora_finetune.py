"""A short real LoRA fine-tune of SmolLM2 into a temporary MLflow store: the registry version,
its tags, loading it back by version and by alias, and the adapter/base mismatch errors."""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import torch
from mlflow.tracking import MlflowClient

from assets.model import lora_adapter
from llmops_dagster.config import PROJECT_ROOT, Settings, default_generator_model
from llmops_dagster.definitions import build_resources
from llmops_dagster.models import load_generator
from llmops_dagster.models.base import AdapterMismatchError
from llmops_dagster.models.local import (
    LocalTransformersGenerator,
    load_base_model,
    load_local_generator,
)
from llmops_dagster.models.registry import (
    TAG_BASE_FINGERPRINT,
    TAG_BASE_MODEL_ID,
    TAG_DATASET_DIGEST,
    TAG_INDEX_VERSION,
    TAG_KIND,
    TAG_MODEL_VERSION,
    load_adapter_generator,
    load_registered_generator,
)
from llmops_dagster.models.spec import GeneratorSpec, LocalModelSpec
from llmops_dagster.qa import load_qa_jsonl
from llmops_dagster.sources.source_config import default_sources_config
from llmops_dagster.tracking.mlflow_store import ensure_mlflow
from llmops_dagster.tracking.runs import open_run
from llmops_dagster.train.dataset import (
    DEFAULT_TRAIN_QA,
    SFTDataset,
    build_sft_dataset,
    corpus_context_fn,
)
from llmops_dagster.train.lora import LoraResult, train_lora
from llmops_dagster.train.recipe import (
    PARENT_RUN_TAG,
    RANKING_ARTIFACT,
    Recipe,
    RecipeSearch,
    select_recipe,
)
from tests.conftest import asset_metadata
from tests.support.tracking import sqlite_store

pytestmark = pytest.mark.integration

SAMPLE = PROJECT_ROOT / "data" / "sample"
SAMPLE_AUDIENCE = default_sources_config(SAMPLE).filesystem.audience_for  # type: ignore[union-attr]

MODEL_NAME = "test-generator-lora"
PROBE = "<|im_start|>user\nWhen was Northwind founded?<|im_end|>\n<|im_start|>assistant\n"
#: The shared project cache: the GGUF → safetensors conversion (~40 s) happens once.
# Every core, as the lora_adapter asset trains (train_torch_threads): nothing else runs while
# these fixtures train, and Elasticsearch idles.
SPEC = LocalModelSpec(
    model=default_generator_model(),
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    cache_dir=PROJECT_ROOT / ".llmops" / "models",
    threads=Settings().models.train_torch_threads,
)
LINEAGE = {"dagster.run_id": "test-run", "upstream.finetune_dataset": "abc123"}


@dataclass
class Trained:
    tracking_uri: str
    spec: LocalModelSpec
    dataset: SFTDataset
    result: LoraResult
    client: MlflowClient
    base: LocalTransformersGenerator


def _small_dataset(tokenizer: object) -> object:
    """16 training items → 12 train / 4 validation: enough for a few steps and an eval."""
    return build_sft_dataset(
        load_qa_jsonl(DEFAULT_TRAIN_QA)[:16],
        tokenizer=tokenizer,
        context_fn=corpus_context_fn(SAMPLE, k=1, audience=SAMPLE_AUDIENCE),
        val_fraction=0.25,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    home = tmp_path_factory.mktemp("lora")
    store = ensure_mlflow(sqlite_store(home / "mlflow" / "mlflow.db"), "test")
    # Adapters download into a temp cache; the base model comes from the shared one (the
    # converted copy is keyed by the GGUF, so the base stays cached per process either way).
    spec = LocalModelSpec(
        model=SPEC.model, gguf_file=SPEC.gguf_file, cache_dir=home / "models", threads=SPEC.threads
    )
    base = load_local_generator(SPEC)
    dataset = _small_dataset(base.tokenizer)
    with open_run(
        store, run_name="lora-finetune", tags=LINEAGE, ui_url="http://127.0.0.1:5000"
    ) as run:
        result = train_lora(
            load_base_model(SPEC, fresh=True),
            dataset,
            run,
            max_steps=4,
            batch_size=2,
            max_seq_len=256,
            learning_rate=2e-3,
            warmup_steps=0,
            index_version="llmops-chunks-test-v1",
            registered_model_name=MODEL_NAME,
            output_dir=home / "adapter",
        )
    return Trained(
        store.tracking_uri, spec, dataset, result, MlflowClient(store.tracking_uri), base
    )


def _logits(generator: LocalTransformersGenerator) -> torch.Tensor:
    enc = generator.tokenizer([PROBE], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return generator.model(**enc).logits[0, -1].float()


def test_run_is_logged_and_version_registered_with_tags(trained: Trained) -> None:
    result, client = trained.result, trained.client
    assert result.model_version == "1" and result.steps == 4
    assert result.adapter_dir == (trained.spec.cache_dir.parent / "adapter").resolve()
    version = client.get_model_version(MODEL_NAME, result.model_version)
    assert version.run_id == result.run_id
    assert version.source == result.artifact_uri
    assert version.tags[TAG_BASE_MODEL_ID] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert version.tags[TAG_DATASET_DIGEST] == trained.dataset.digest
    assert version.tags[TAG_INDEX_VERSION] == "llmops-chunks-test-v1"
    assert version.tags[TAG_BASE_FINGERPRINT] == result.base_fingerprint
    # The caller's lineage tags travel from the run to the version.
    assert {k: version.tags[k] for k in LINEAGE} == LINEAGE
    # Registering never promotes: the evaluation gate owns "champion".
    assert not client.get_registered_model(MODEL_NAME).aliases

    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_KIND] == "lora" and run.data.tags[TAG_MODEL_VERSION] == "1"
    assert run.data.tags[TAG_DATASET_DIGEST] == trained.dataset.digest
    assert run.data.params["r"] == "8" and run.data.params["target_modules"] == "q_proj,v_proj"
    assert run.data.params["dataset_digest"] == trained.dataset.digest
    assert {"eval_loss_before", "eval_loss_after", "tokens_per_s"} <= set(run.data.metrics)
    history = client.get_metric_history(result.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert result.eval_loss_after is not None and result.eval_loss_before is not None
    assert result.train_tokens > 0 and result.tokens_per_s > 0
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= artifacts
    assert run.inputs.dataset_inputs[0].dataset.digest == trained.dataset.digest[:32]


def test_adapter_loads_by_version_and_alias_and_changes_logits(trained: Trained) -> None:
    trained.client.set_registered_model_alias(MODEL_NAME, "candidate", trained.result.model_version)
    by_version = load_registered_generator(
        trained.spec, trained.tracking_uri, f"models:/{MODEL_NAME}/1"
    )
    by_alias = load_generator(
        GeneratorSpec(local=trained.spec),
        adapter_uri=f"models:/{MODEL_NAME}@candidate",
        tracking_uri=trained.tracking_uri,
    )
    assert by_version.model_id == f"SmolLM2-135M-Instruct.Q4_1.gguf+lora:{MODEL_NAME}/v1"
    assert by_alias.model_id == by_version.model_id
    assert (trained.spec.cache_dir / "adapters").is_dir()  # downloaded once, under cache_dir

    base_logits = _logits(trained.base)
    adapted = _logits(by_version)
    assert torch.allclose(adapted, _logits(by_alias))
    assert (adapted - base_logits).abs().max().item() > 1e-3
    # The plain base generator is untouched by training on a fresh copy or by an adapter.
    assert torch.allclose(base_logits, _logits(load_local_generator(trained.spec)), atol=1e-4)
    [out] = by_version.generate([PROBE], max_new_tokens=6)
    assert out.completion_tokens > 0


def test_adapter_for_another_base_is_rejected(trained: Trained, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign-adapter"
    shutil.copytree(trained.result.adapter_dir, foreign)
    config = json.loads((foreign / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-360M-Instruct"
    (foreign / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(
        AdapterMismatchError, match=r"SmolLM2-360M-Instruct.*LLMOPS_GENERATOR_MODEL"
    ):
        load_adapter_generator(trained.spec, foreign)


def test_registry_tag_for_another_base_is_rejected(trained: Trained) -> None:
    other = trained.client.create_model_version(
        MODEL_NAME,
        source=trained.result.artifact_uri,
        run_id=trained.result.run_id,
        tags={TAG_BASE_MODEL_ID: "Qwen/Qwen2.5-0.5B-Instruct"},
    )
    with pytest.raises(AdapterMismatchError, match=r"Qwen2\.5-0\.5B-Instruct"):
        load_registered_generator(
            trained.spec, trained.tracking_uri, f"models:/{MODEL_NAME}/{other.version}"
        )


# --------------------------------------------------------------------------------------------
# The recipe chosen on the validation split, then trained and registered
# --------------------------------------------------------------------------------------------

RECIPE_MODEL_NAME = "test-generator-lora-recipe"
#: Two tiny candidates that differ in rank, modules and learning rate (2 steps each).
CANDIDATES = [
    Recipe(r=2, alpha=4, target_modules=("q_proj", "v_proj"), learning_rate=2e-3),
    Recipe(r=4, alpha=8, target_modules=("v_proj",), learning_rate=5e-4),
]


@dataclass
class Searched:
    search: RecipeSearch
    result: LoraResult
    client: MlflowClient
    experiment_id: str


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    home = tmp_path_factory.mktemp("recipe")
    store = ensure_mlflow(sqlite_store(home / "mlflow" / "mlflow.db"), "test")
    base = load_local_generator(SPEC)
    dataset = _small_dataset(base.tokenizer)
    with open_run(
        store, run_name="lora-recipe", tags=LINEAGE, ui_url="http://127.0.0.1:5000"
    ) as run:
        search = select_recipe(
            lambda: load_base_model(SPEC, fresh=True),
            dataset,
            run,
            CANDIDATES,
            2,
            batch_size=2,
            max_seq_len=256,
        )
        winner = search.winner.recipe
        result = train_lora(
            load_base_model(SPEC, fresh=True),
            dataset,
            run,
            r=winner.r,
            alpha=winner.alpha,
            target_modules=winner.target_modules,
            learning_rate=winner.learning_rate,
            max_steps=2,
            batch_size=2,
            max_seq_len=256,
            warmup_steps=0,
            registered_model_name=RECIPE_MODEL_NAME,
            output_dir=home / "adapter",
        )
    return Searched(search, result, MlflowClient(store.tracking_uri), store.experiment_id)


def test_recipe_search_picks_the_lowest_recorded_validation_loss(searched: Searched) -> None:
    search, client = searched.search, searched.client
    children = client.search_runs(
        [searched.experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{searched.result.run_id}'",
    )
    recorded = {run.data.tags["llmops.recipe"]: run.data.metrics["val_loss"] for run in children}
    # One nested run per candidate, each with its validation loss as the ranking recorded it.
    assert recorded == {c.label: c.val_loss for c in search.ranking}
    assert set(recorded) == {c.label for c in CANDIDATES}
    assert search.winner.val_loss == min(recorded.values())
    assert [c.rank for c in search.ranking] == [1, 2]
    assert all(c.diverged is None and c.steps == 2 for c in search.ranking)
    assert {run.info.status for run in children} == {"FINISHED"}
    for run in children:
        recipe = next(c for c in CANDIDATES if c.label == run.data.tags["llmops.recipe"])
        assert run.data.params["r"] == str(recipe.r)
        assert run.data.params["learning_rate"] == str(recipe.learning_rate)
        assert run.data.params["search_steps"] == "2"
        # Children carry no lineage tags: lineage lookups find the asset run only.
        assert "dagster.run_id" not in run.data.tags
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]


def test_registered_adapter_run_carries_the_chosen_recipe(
    searched: Searched, tmp_path: Path
) -> None:
    client, result = searched.client, searched.result
    winner = searched.search.winner.recipe
    version = client.get_model_version(RECIPE_MODEL_NAME, result.model_version)
    params = client.get_run(version.run_id).data.params
    assert version.run_id == result.run_id
    assert params["recipe.chosen"] == winner.label
    assert params["recipe.candidates"] == "2" and params["recipe.search_steps"] == "2"
    assert params["r"] == str(winner.r) and params["alpha"] == str(winner.alpha)
    assert params["target_modules"] == ",".join(winner.target_modules)
    assert params["learning_rate"] == str(winner.learning_rate)
    assert result.params.r == winner.r and result.steps == 2
    # The ranking is a table artifact of the asset run, best first. (Read as a file:
    # MlflowClient.load_table searches runs through the fluent API's tracking URI, not the
    # client's.)
    local = client.download_artifacts(result.run_id, RANKING_ARTIFACT, str(tmp_path))
    table = json.loads(Path(local).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [row["recipe"] for row in rows] == [c.label for c in searched.search.ranking]
    # pandas writes the table's floats with 10 decimals (the exact ones are the runs' metrics).
    assert [row["val_loss"] for row in rows] == [
        pytest.approx(c.val_loss, abs=1e-9) for c in searched.search.ranking
    ]
    assert RANKING_ARTIFACT in client.get_run(result.run_id).data.tags["mlflow.loggedArtifacts"]


def _tiny_dataset() -> SFTDataset:
    """16 items → 12 train / 4 validation, as the fixtures above use."""
    return build_sft_dataset(
        load_qa_jsonl(DEFAULT_TRAIN_QA)[:16],
        tokenizer=load_local_generator(SPEC).tokenizer,
        context_fn=corpus_context_fn(SAMPLE, k=1, audience=SAMPLE_AUDIENCE),
        val_fraction=0.25,
    )


def _materialize_adapter(
    tmp_settings: Settings, es_settings: Settings, config: dict[str, object]
) -> tuple[dict, MlflowClient]:
    """lora_adapter alone, its finetune_dataset input a stub asset with the tiny dataset."""
    settings = tmp_settings.override(
        elasticsearch={
            "url": es_settings.elasticsearch.url,
            "index_alias": f"lora-{uuid.uuid4().hex[:8]}",
        },
        models={"torch_threads": 1},
    )
    dataset = _tiny_dataset()

    @dg.asset(name="finetune_dataset")
    def stub_dataset() -> SFTDataset:
        return dataset

    result = dg.materialize(
        [stub_dataset, lora_adapter],
        resources=build_resources(settings),
        run_config={"ops": {"lora_adapter": {"config": config}}},
    )
    assert result.success
    return asset_metadata(result, "lora_adapter"), MlflowClient(settings.mlflow_uri)


def test_lora_adapter_asset_trains_the_recipe_chosen_by_validation_loss(
    tmp_settings: Settings, es_settings: Settings
) -> None:
    candidates = [
        {"name": "small", "r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"],
         "learning_rate": 2e-3},
        {"name": "v-only", "r": 4, "alpha": 8, "target_modules": ["v_proj"],
         "learning_rate": 5e-4},
    ]  # fmt: skip
    config = {"max_steps": 2, "batch_size": 2, "max_seq_len": 256, "search_steps": 8}
    meta, client = _materialize_adapter(
        tmp_settings, es_settings, {**config, "candidates": candidates}
    )
    # search_steps 8 is capped at max_steps: the search never trains longer than the winner.
    assert (meta["recipe/candidates"], meta["search_steps"], meta["steps"]) == (2, 2, 2)
    # The 4 validation examples are fewer than search_validation_examples (16): all are scored.
    assert meta["search_validation_examples"] == 4
    losses = {name: meta[f"recipe/{name}/val_loss"] for name in ("small", "v-only")}
    # Lowest validation loss wins; on a tie, the first candidate ("small").
    winner = "v-only" if losses["v-only"] < losses["small"] else "small"
    assert meta["recipe/chosen"].startswith(f"{winner} (")
    assert meta["search_seconds"] > 0
    params = client.get_run(meta["mlflow_run_id"]).data.params
    chosen = next(c for c in candidates if c["name"] == winner)
    assert params["recipe.chosen"] == winner
    assert params["r"] == str(chosen["r"]) and params["learning_rate"] == str(
        chosen["learning_rate"]
    )
    assert params["target_modules"] == ",".join(chosen["target_modules"])  # type: ignore[arg-type]
    version = client.get_model_version(meta["registered_model"], meta["model_version"])
    assert version.run_id == meta["mlflow_run_id"]


def test_lora_adapter_asset_without_recipe_search_trains_its_configured_recipe(
    tmp_settings: Settings, es_settings: Settings
) -> None:
    config = {
        "recipe_search": False,
        "max_steps": 1,
        "batch_size": 2,
        "max_seq_len": 256,
        "r": 4,
        "target_modules": ["q_proj"],
    }
    meta, client = _materialize_adapter(tmp_settings, es_settings, config)
    assert (meta["recipe/candidates"], meta["search_seconds"], meta["steps"]) == (0, 0.0, 1)
    assert (
        meta["recipe/chosen"] == "r4-a16-q_proj-lr0.001 (r=4, alpha=16, modules=q_proj, lr=0.001)"
    )
    assert not [k for k in meta if k.endswith("/val_loss")]
    run = client.get_run(meta["mlflow_run_id"])
    assert run.data.params["r"] == "4" and run.data.params["target_modules"] == "q_proj"
    assert "recipe.chosen" not in run.data.params
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{run.info.run_id}'"
    )
    assert children == []
