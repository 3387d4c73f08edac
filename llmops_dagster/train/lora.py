"""LoRA fine-tuning of a loaded base model, logged into a caller's MLflow run and registered.

Why transformers ``Trainer`` and not TRL's ``SFTTrainer``: the one thing SFTTrainer would add
here is completion-only loss, which is a ~20-line collator
(:func:`llmops_dagster.train.sft_tokens.tokenize_example` masks the prompt tokens with -100).
TRL is another fast-moving dependency whose argument names change between minor releases;
plain ``Trainer`` already gives CPU/GPU placement, bf16 on GPUs, gradient accumulation,
evaluation and callbacks, and is what TRL builds on anyway.

What a run records (so the evaluation gate and lineage can trust it):
params (LoRA and optimisation settings, base model, dataset digest, index version); per-step
``train_loss`` from a :class:`~transformers.TrainerCallback`; ``eval_loss_before`` and
``eval_loss_after`` on the validation split; throughput; the dataset as an MLflow input and as
a JSONL artifact; the adapter folder as artifacts under ``adapter/``; and a new version of the
registered model whose source is that artifact folder (MLflow 3's ``register_model`` wants a
logged model, so ``create_model_version(source=...)`` is used), tagged with the base model id,
the architecture fingerprint, the dataset digest and the index version.

The caller opens and closes the run (:func:`llmops_dagster.tracking.runs.open_run`, with its
lineage tags) and passes a private copy of the base (``load_base_model(spec, fresh=True)``);
this module only writes into that run. It never touches the ``champion`` alias: promoting a
version is the evaluation gate's job.

Size (~530 lines): one job, one LoRA run from a loaded base and a dataset to a registered
adapter version. Its steps (parameters, Trainer set-up, loss before/after, MLflow logging,
registration) run in sequence over one run's state. :func:`fit_lora` is the training alone
(no MLflow, no registry), which the recipe search (:mod:`llmops_dagster.train.recipe`) runs
per candidate; the tokenisation, which is reusable on its own (the fine-tuning benchmark), is
:mod:`llmops_dagster.train.sft_tokens`.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_dagster.models.local import LoadedModel, base_fingerprint
from llmops_dagster.models.registry import (
    ADAPTER_METADATA_FILE,
    DEFAULT_REGISTERED_MODEL,
    TAG_BASE_FINGERPRINT,
    TAG_BASE_MODEL_ID,
    TAG_DATASET_DIGEST,
    TAG_INDEX_VERSION,
    TAG_KIND,
    TAG_MODEL_VERSION,
    TAG_PROMPT_VERSION,
    register_adapter_version,
)
from llmops_dagster.train.dataset import SFTDataset, SFTExample
from llmops_dagster.train.sft_tokens import CompletionCollator, tokenize_example, tokenize_split

# The tokenisation (completion-only loss) lives in ``train.sft_tokens``; importable from here.
__all__ = [
    "CompletionCollator",
    "LoraFit",
    "LoraParams",
    "LoraResult",
    "TrainingError",
    "fit_lora",
    "lora_config",
    "tokenize_example",
    "tokenize_split",
    "train_lora",
]

if TYPE_CHECKING:
    from llmops_dagster.tracking.runs import DatasetRef, RunHandle

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training could not run (bad parameters, empty dataset)."""


@dataclass(frozen=True)
class LoraParams:
    """Every knob of a run; all of them are logged as MLflow params."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    max_steps: int = 40
    learning_rate: float = 3e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_len: int = 512
    seed: int = 13
    warmup_steps: int = 2
    weight_decay: float = 0.0

    def validate(self) -> None:
        problems = []
        if self.r < 1:
            problems.append(f"r={self.r} must be >= 1")
        if self.max_steps < 1:
            problems.append(f"max_steps={self.max_steps} must be >= 1")
        if self.batch_size < 1 or self.grad_accum < 1:
            problems.append("batch_size and grad_accum must be >= 1")
        if self.max_seq_len < 32:
            problems.append(f"max_seq_len={self.max_seq_len} is too short (< 32)")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if not self.target_modules:
            problems.append("target_modules is empty")
        if problems:
            raise TrainingError("bad LoRA parameters: " + "; ".join(problems))


@dataclass
class LoraResult:
    """What a run produced; ``model_version`` is None only when ``register=False``."""

    run_id: str
    experiment_id: str
    registered_model_name: str | None
    model_version: str | None
    adapter_dir: Path
    artifact_uri: str
    base_model_id: str
    base_fingerprint: str
    dataset_digest: str
    index_version: str | None
    params: LoraParams
    device: str
    steps: int
    train_loss: float | None
    eval_loss_before: float | None
    eval_loss_after: float | None
    train_tokens: int
    train_seconds: float
    losses: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def model_uri(self) -> str | None:
        if self.model_version is None:
            return None
        return f"models:/{self.registered_model_name}/{self.model_version}"

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["adapter_dir"] = str(self.adapter_dir)
        data["tokens_per_s"] = round(self.tokens_per_s, 2)
        data["model_uri"] = self.model_uri
        return data


def lora_config(params: LoraParams) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=list(params.target_modules),
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _loss_callback(
    losses: list[float], on_log: Callable[[int, dict[str, float]], None] | None
) -> Any:
    from transformers import TrainerCallback

    class LossCallback(TrainerCallback):
        """Per-step training loss → ``losses`` and ``on_log`` (transformers' own MLflow hook is
        disabled because it uses the global active run, which is unsafe in a multi-asset
        process)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs and "eval_loss" not in logs:
                losses.append(float(logs["loss"]))
                if on_log is not None:
                    step_logs = {"train_loss": float(logs["loss"])}
                    if "learning_rate" in logs:
                        step_logs["learning_rate"] = float(logs["learning_rate"])
                    on_log(int(state.global_step), step_logs)

    return LossCallback()


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def train_lora(
    base: LoadedModel,
    dataset: SFTDataset,
    run: RunHandle,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    max_steps: int = 40,
    learning_rate: float = 3e-4,
    batch_size: int = 4,
    grad_accum: int = 1,
    max_seq_len: int = 512,
    seed: int = 13,
    warmup_steps: int = 2,
    index_version: str | None = None,
    registered_model_name: str = DEFAULT_REGISTERED_MODEL,
    register: bool = True,
    output_dir: Path | None = None,
) -> LoraResult:
    """Fine-tune a LoRA adapter on ``dataset`` into ``base`` and record everything in ``run``.

    ``base`` is trained in place: pass a private copy (``load_base_model(spec, fresh=True)``).
    The run gets params, per-step loss, metrics, the dataset input, the LoRA tags and the
    adapter under ``adapter/``; with ``register`` a new version of ``registered_model_name``
    points at it, tagged with the run's tags (its lineage included). The adapter folder is
    written to ``output_dir`` (default: a new temporary folder). CPU defaults (40 steps of 4
    sequences ≤ 512 tokens) take a few minutes on 2 cores; a GPU is used when ``base`` is on one.
    """
    params = LoraParams(
        r=r,
        alpha=alpha,
        dropout=dropout,
        target_modules=tuple(target_modules),
        max_steps=max_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_seq_len=max_seq_len,
        seed=seed,
        warmup_steps=warmup_steps,
    )
    params.validate()
    if not dataset.train:
        raise TrainingError("the fine-tuning dataset has no training examples")
    if base.shared:
        raise TrainingError(
            "train_lora trains the model it is given, and this one is the process-wide cached "
            "base other callers use: pass load_base_model(spec, fresh=True)"
        )
    lora_tags = {
        TAG_KIND: "lora",
        TAG_BASE_MODEL_ID: base.source.model_id,
        TAG_BASE_FINGERPRINT: base_fingerprint(base.model),
        TAG_DATASET_DIGEST: dataset.digest,
        TAG_PROMPT_VERSION: dataset.prompt_version,
        **({TAG_INDEX_VERSION: index_version} if index_version else {}),
    }
    for key, value in lora_tags.items():
        run.set_tag(key, value)
    result = _train_and_log(
        base, dataset, params, run, index_version=index_version, output_dir=output_dir
    )
    if register:
        version_tags = {
            k: v for k, v in run.tags.items() if k != TAG_KIND and not k.startswith("mlflow.")
        }
        result.registered_model_name = registered_model_name
        result.model_version = register_adapter_version(
            run.client,
            registered_model_name,
            source=result.artifact_uri,
            run_id=run.run_id,
            tags=version_tags,
        )
        run.set_tag(TAG_MODEL_VERSION, result.model_version)
    return result


def _sft_dataset_ref(dataset: SFTDataset) -> DatasetRef:
    from llmops_dagster.tracking.runs import DatasetRef

    rows = [
        {"split": split, "id": ex.id, "prompt": ex.prompt, "completion": ex.completion}
        for split, examples in (("train", dataset.train), ("validation", dataset.validation))
        for ex in examples
    ]
    return DatasetRef(
        name="sft-" + Path(dataset.source).stem,
        digest=dataset.digest[:32],
        source=dataset.source,
        rows=rows,
        context="training",
    )


@dataclass
class LoraFit:
    """One Trainer run on a base: the PEFT-wrapped model and its raw numbers.

    The losses are as the Trainer computed them (NaN or inf kept), so a caller can tell a run
    that diverged from one that merely has no validation split (``None``).
    """

    peft_model: Any
    steps: int
    losses: list[float]
    eval_loss_before: float | None
    eval_loss_after: float | None
    train_tokens: int
    train_seconds: float
    trainable_params: int
    total_params: int


def fit_lora(
    base: LoadedModel,
    train: Sequence[SFTExample],
    validation: Sequence[SFTExample],
    params: LoraParams,
    *,
    on_start: Callable[[Any], None] | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    evaluate_before: bool = True,
) -> LoraFit:
    """Inject LoRA layers into ``base.model`` and train them on ``train``; nothing is logged
    or registered (``train_lora`` does that; the recipe search scores candidates with this).

    ``base`` is changed in place: pass a private copy. ``validation`` is evaluated after
    training (and before, with ``evaluate_before``). ``on_start`` gets the PEFT model before
    the first step; ``on_log`` gets ``(step, {"train_loss", "learning_rate"})`` per step.
    """
    import torch
    from peft import get_peft_model
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    params.validate()
    if not train:
        raise TrainingError("the fine-tuning dataset has no training examples")
    # The same seed before the LoRA init makes candidates of a search start alike.
    set_seed(params.seed)
    tokenizer = base.tokenizer
    model = base.model
    model.train()
    peft_model = get_peft_model(model, lora_config(params))
    trainable, total = peft_model.get_nb_trainable_parameters()
    if on_start is not None:
        on_start(peft_model)

    train_rows = tokenize_split(tokenizer, train, params.max_seq_len)
    val_rows = tokenize_split(tokenizer, validation, params.max_seq_len)
    collator = CompletionCollator(int(tokenizer.pad_token_id))
    losses: list[float] = []
    on_gpu = base.device.startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="llmops-lora-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            max_steps=params.max_steps,
            per_device_train_batch_size=params.batch_size,
            per_device_eval_batch_size=params.batch_size,
            gradient_accumulation_steps=params.grad_accum,
            learning_rate=params.learning_rate,
            weight_decay=params.weight_decay,
            warmup_steps=params.warmup_steps,
            lr_scheduler_type="linear",
            logging_steps=1,
            # Log NaN/inf as they are: a diverging run must look diverged, not averaged over.
            logging_nan_inf_filter=False,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            seed=params.seed,
            data_seed=params.seed,
            use_cpu=not on_gpu,
            bf16=on_gpu and torch.cuda.is_bf16_supported(),
            remove_unused_columns=False,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=peft_model,
            args=args,
            train_dataset=train_rows,  # type: ignore[arg-type]  # a list is a map-style dataset
            eval_dataset=val_rows or None,  # type: ignore[arg-type]
            data_collator=collator,
            callbacks=[_loss_callback(losses, on_log)],
        )
        # disable_tqdm swaps the progress bar for a callback that prints every log dict.
        trainer.remove_callback(PrinterCallback)
        eval_before = (
            float(trainer.evaluate()["eval_loss"]) if val_rows and evaluate_before else None
        )
        collator.counting = True
        started = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - started
        collator.counting = False
        eval_after = float(trainer.evaluate()["eval_loss"]) if val_rows else None
    model.eval()
    return LoraFit(
        peft_model=peft_model,
        steps=int(trainer.state.global_step),
        losses=losses,
        eval_loss_before=eval_before,
        eval_loss_after=eval_after,
        train_tokens=collator.tokens,
        train_seconds=train_seconds,
        trainable_params=trainable,
        total_params=total,
    )


def _train_and_log(
    base: LoadedModel,
    dataset: SFTDataset,
    params: LoraParams,
    run: RunHandle,
    *,
    index_version: str | None,
    output_dir: Path | None,
) -> LoraResult:
    def log_params(peft_model: Any) -> None:
        trainable, total = peft_model.get_nb_trainable_parameters()
        run.log(
            params={
                **{
                    k: (",".join(v) if isinstance(v, tuple) else v)
                    for k, v in asdict(params).items()
                },
                "base_model_id": base.source.model_id,
                "dataset_digest": dataset.digest,
                "dataset_source": dataset.source,
                "n_train": len(dataset.train),
                "n_validation": len(dataset.validation),
                "prompt_version": dataset.prompt_version,
                "index_version": index_version or "",
                "device": base.device,
                "trainable_params": trainable,
                "total_params": total,
                "trainer": "transformers.Trainer",
            },
            datasets=[_sft_dataset_ref(dataset)],
        )

    def log_step(step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            run.client.log_metric(run.run_id, key, value, step=step)

    fit = fit_lora(
        base, dataset.train, dataset.validation, params, on_start=log_params, on_log=log_step
    )
    peft_model, losses, steps = fit.peft_model, fit.losses, fit.steps
    train_seconds = fit.train_seconds
    eval_before, eval_after = _finite(fit.eval_loss_before), _finite(fit.eval_loss_after)
    metrics = {
        "train_tokens": float(fit.train_tokens),
        "train_seconds": train_seconds,
        "tokens_per_s": fit.train_tokens / train_seconds if train_seconds > 0 else 0.0,
    }
    if eval_before is not None:
        metrics["eval_loss_before"] = eval_before
        run.client.log_metric(run.run_id, "eval_loss", eval_before, step=0)
    if eval_after is not None:
        metrics["eval_loss_after"] = eval_after
        run.client.log_metric(run.run_id, "eval_loss", eval_after, step=steps)
    for key, value in metrics.items():
        run.client.log_metric(run.run_id, key, value, step=steps)

    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix=f"llmops-adapter-{run.run_id[:8]}-"))
    adapter_dir = Path(output_dir).resolve()
    adapter_dir.mkdir(parents=True, exist_ok=True)
    # Record the portable base id (not this machine's cache path) so a loader can check it.
    peft_model.peft_config["default"].base_model_name_or_path = base.source.model_id
    # Embeddings are not trained; "auto" would look up the base's config by that id.
    peft_model.save_pretrained(str(adapter_dir), save_embedding_layers=False)
    (adapter_dir / ADAPTER_METADATA_FILE).write_text(
        json.dumps(
            {
                "base_model_id": base.source.model_id,
                "base_model_fingerprint": base_fingerprint(peft_model.get_base_model()),
                "dataset_digest": dataset.digest,
                "prompt_name": dataset.prompt_name,
                "prompt_version": dataset.prompt_version,
                "index_version": index_version,
                "mlflow_run_id": run.run_id,
                "params": asdict(params),
            },
            indent=2,
        )
    )
    run.client.log_artifacts(run.run_id, str(adapter_dir), artifact_path="adapter")
    with tempfile.TemporaryDirectory(prefix="llmops-sft-") as tmp:
        jsonl = dataset.write_jsonl(Path(tmp) / "sft.jsonl")
        run.client.log_artifact(run.run_id, str(jsonl), "dataset")
    return LoraResult(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        registered_model_name=None,
        model_version=None,
        adapter_dir=adapter_dir,
        artifact_uri=f"{run.artifact_uri.rstrip('/')}/adapter",
        base_model_id=base.source.model_id,
        base_fingerprint=base_fingerprint(peft_model.get_base_model()),
        dataset_digest=dataset.digest,
        index_version=index_version,
        params=params,
        device=base.device,
        steps=steps,
        train_loss=losses[-1] if losses else None,
        eval_loss_before=eval_before,
        eval_loss_after=eval_after,
        train_tokens=fit.train_tokens,
        train_seconds=train_seconds,
        losses=losses,
    )
