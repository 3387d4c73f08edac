"""torch threads: evaluations and trainings run alone, on every core (lora_adapter and
embedding_finetune share the evaluation pool with rag_evaluation; ``eval_torch_threads``,
``train_torch_threads``), serving keeps ``torch_threads``."""

from __future__ import annotations

import os

import pytest

from llmops_dagster.config import Settings
from llmops_dagster.resources import ModelsResource

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ("eval_torch_threads", "LLMOPS_EVAL_TORCH_THREADS"),
        ("train_torch_threads", "LLMOPS_TRAIN_TORCH_THREADS"),
    ],
)
def test_the_threads_of_work_that_runs_alone_are_read_by_the_settings_and_default_to_every_core(
    field: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(variable, raising=False)
    assert getattr(Settings().models, field) == os.cpu_count()
    monkeypatch.setenv(variable, "5")
    monkeypatch.setenv("LLMOPS_TORCH_THREADS", "1")
    models = ModelsResource.from_settings(Settings())
    assert (models.torch_threads, getattr(models, field)) == (1, 5)
    monkeypatch.setenv(variable, "0")
    with pytest.raises(ValueError, match=rf"{variable}\n  Input should be greater"):
        Settings()


def test_the_training_models_load_with_train_torch_threads_and_leave_the_resource_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMOPS_TORCH_THREADS", "1")
    monkeypatch.setenv("LLMOPS_TRAIN_TORCH_THREADS", "3")
    models = ModelsResource.from_settings(Settings())
    training = models.for_training()
    assert training.local_model_spec().threads == 3
    assert models.local_model_spec().threads == 1


def test_trainings_share_the_evaluation_pool_with_the_evaluation() -> None:
    from llmops_dagster.definitions import defs

    pools = {
        key: defs.resolve_assets_def(key).op.pool
        for key in ("lora_adapter", "embedding_finetune", "rag_evaluation")
    }
    assert pools == dict.fromkeys(pools, "evaluation")
