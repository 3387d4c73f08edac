"""A short real LoRA fine-tune of SmolLM2 into a temporary MLflow store: the registry version,
its tags, loading it back by version and by alias, and the adapter/base mismatch errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from llmops_dagster.config import Settings, get_settings
from llmops_dagster.rag.llm import (
    TAG_BASE_FINGERPRINT,
    TAG_BASE_MODEL_ID,
    AdapterMismatchError,
    LocalTransformersGenerator,
    load_adapter_generator,
    load_local_generator,
    load_registered_generator,
)
from llmops_dagster.train.dataset import (
    SFTDataset,
    build_sft_dataset,
    corpus_context_fn,
    load_qa_jsonl,
)
from llmops_dagster.train.lora import (
    TAG_DATASET_DIGEST,
    TAG_INDEX_VERSION,
    LoraResult,
    train_lora,
)

pytestmark = pytest.mark.integration

MODEL_NAME = "test-generator-lora"
PROBE = "<|im_start|>user\nWhen was Northwind founded?<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class Trained:
    settings: Settings
    dataset: SFTDataset
    result: LoraResult
    client: MlflowClient
    base: LocalTransformersGenerator


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    # Warm the model from the default LLMOPS_HOME (shared converted cache); the run's stores
    # (MLflow, adapters) live in a temp home.
    # One torch thread: on a shared 2-core box two OpenMP threads stall each other (5x slower).
    base = load_local_generator(get_settings().model_copy(update={"torch_threads": 1}))
    home = tmp_path_factory.mktemp("lora") / "llmops-home"
    home.mkdir()
    settings = get_settings().model_copy(
        update={
            "llmops_home": home,
            "duckdb_path": home / "warehouse.duckdb",
            "mlflow_tracking_uri": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
            "torch_threads": 1,
        }
    )
    # 16 items → 12 train / 4 validation: enough for 4 steps, and a quick before/after eval.
    dataset = build_sft_dataset(
        load_qa_jsonl()[:16],
        tokenizer=base.tokenizer,
        context_fn=corpus_context_fn(settings.sample_data_dir, k=1),
        val_fraction=0.25,
    )
    result = train_lora(
        settings,
        dataset,
        max_steps=4,
        batch_size=2,
        max_seq_len=256,
        learning_rate=2e-3,
        warmup_steps=0,
        index_version="llmops-chunks-test-v1",
        registered_model_name=MODEL_NAME,
    )
    yield Trained(settings, dataset, result, MlflowClient(settings.effective_mlflow_uri), base)


def _logits(generator: LocalTransformersGenerator) -> torch.Tensor:
    enc = generator.tokenizer([PROBE], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return generator.model(**enc).logits[0, -1].float()


def test_run_is_logged_and_version_registered_with_tags(trained: Trained) -> None:
    result, client = trained.result, trained.client
    assert result.model_version == "1" and result.steps == 4
    version = client.get_model_version(MODEL_NAME, result.model_version)
    assert version.run_id == result.run_id
    assert version.source == result.artifact_uri
    assert version.tags[TAG_BASE_MODEL_ID] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert version.tags[TAG_DATASET_DIGEST] == trained.dataset.digest
    assert version.tags[TAG_INDEX_VERSION] == "llmops-chunks-test-v1"
    assert version.tags[TAG_BASE_FINGERPRINT] == result.base_fingerprint
    # Registering never promotes: the evaluation gate owns "champion".
    assert not client.get_registered_model(MODEL_NAME).aliases

    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
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
    by_version = load_registered_generator(trained.settings, MODEL_NAME, version=1)
    by_alias = load_registered_generator(trained.settings, MODEL_NAME, alias="candidate")
    assert by_version.model_id == f"SmolLM2-135M-Instruct.Q4_1.gguf+lora:{MODEL_NAME}/v1"
    assert by_alias.model_id == by_version.model_id

    base_logits = _logits(trained.base)
    adapted = _logits(by_version)
    assert torch.allclose(adapted, _logits(by_alias))
    assert (adapted - base_logits).abs().max().item() > 1e-3
    # The plain base generator is untouched by loading an adapter on top of it.
    assert torch.allclose(base_logits, _logits(load_local_generator(trained.settings)), atol=1e-4)
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
        load_adapter_generator(trained.settings, foreign)


def test_registry_tag_for_another_base_is_rejected(trained: Trained) -> None:
    other = trained.client.create_model_version(
        MODEL_NAME,
        source=trained.result.artifact_uri,
        run_id=trained.result.run_id,
        tags={TAG_BASE_MODEL_ID: "Qwen/Qwen2.5-0.5B-Instruct"},
    )
    with pytest.raises(AdapterMismatchError, match=r"Qwen2\.5-0\.5B-Instruct"):
        load_registered_generator(trained.settings, MODEL_NAME, version=other.version)
