"""Fine-tuning the embedding model on the corpus's own ICT pairs
(:mod:`llmops_dagster.embed.finetune_pairs`) with sentence-transformers' training loop.

Why its own trainer and loss: ``SentenceTransformerTrainer`` with
``MultipleNegativesRankingLoss`` over (anchor, positive) is the library's standard recipe for
retrieval (the other positives of a batch are each anchor's negatives; a BM25 hard negative
per pair joins them only when the recipe says so, see ``EmbedRecipe.hard_negative``); the
no-duplicates batch sampler keeps a text from being its own in-batch negative. Reporting
integrations are off (``report_to="none"``): the asset logs to its own MLflow run, never to a
global one.

A trained model is a sentence-transformers folder ``<store_dir>/<base name>-ft-<digest8>``,
``digest8`` from the base model id, the training data digest and the recipe: the same data and
recipe name the same folder, which is reused instead of trained again (``stats.reused``). It is
built in a temporary sibling and renamed into place (:func:`llmops_dagster.files.publish_dir`),
so a half-written model is never loaded. Its id is ``canonical_model_id(folder)``
(``<name>@<weights sha12>``), which keys the embedding cache and the index ``_meta``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops_dagster.embed.finetune_pairs import TrainingPair
from llmops_dagster.embed.model import canonical_model_id
from llmops_dagster.files import atomic_write_json, publish_dir

#: The loss every recipe trains with (a recorded part of the recipe).
LOSS = "MultipleNegativesRankingLoss"
#: Written last into a model folder: its presence means the folder is whole.
STATS_FILE = "finetune.json"
#: Default optimizer steps: 128 of the sample corpus's 195 pairs at batch 16; measured ~10 s
#: a step on 2 CPU cores (load ~1-2), so ~80 s, and 12-19 s a step on cores shared with other
#: training. A model trained on shuffled pairs at learning rate 1e-4 for 12 such steps is clearly
#: worse (golden nDCG@10 0.80 vs 0.94): enough to test that the evaluation refuses it.
DEFAULT_MAX_STEPS = 8


class EmbedFinetuneError(ValueError):
    """Fine-tuning cannot run (bad recipe, no training pairs); the message says why."""


@dataclass(frozen=True)
class EmbedRecipe:
    """How the embedding model is trained. ``max_steps`` (when set) overrides ``epochs``."""

    max_steps: int | None = DEFAULT_MAX_STEPS
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    #: MultipleNegativesRankingLoss's similarity scale (its default: cosine × 20).
    scale: float = 20.0
    #: Train against each pair's BM25 hard negative as well as the in-batch ones. Off by
    #: default: BM25's best hit from another document is often another paper's finding on the
    #: same subject, a right answer to many queries, so it pushes the model away from what it
    #: should find. In benchmarks/results/embed_finetune.json the run with it (one vector per
    #: abstract, learning rate 3e-5, git 781b3ed) took SciFact's kNN nDCG@10 from 0.6451 to
    #: 0.6276 and the run without it (the pipeline's chunks, 2e-5) is level with its base;
    #: which of the three changes removed the loss was not separated.
    hard_negative: bool = False
    seed: int = 13
    loss: str = LOSS

    def validate(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise EmbedFinetuneError(f"max_steps must be >= 1 (or None), not {self.max_steps}")
        if self.max_steps is None and self.epochs <= 0:
            raise EmbedFinetuneError(f"epochs must be > 0, not {self.epochs}")
        if self.batch_size < 2:
            # In-batch negatives need company: with one triple the loss sees one negative.
            raise EmbedFinetuneError(f"batch_size must be >= 2, not {self.batch_size}")
        if not self.learning_rate > 0:
            raise EmbedFinetuneError(f"learning_rate must be > 0, not {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise EmbedFinetuneError(f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        if self.loss != LOSS:
            raise EmbedFinetuneError(f"loss {self.loss!r} is not supported (only {LOSS})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


@dataclass
class FinetuneStats:
    """What a fine-tuning did (or found already done)."""

    model_id: str
    base_model_id: str
    data_digest: str
    examples: int
    steps: int
    examples_seen: int  # steps × batch size (a last, smaller batch of an epoch counts full)
    seconds: float
    final_loss: float | None
    losses: list[float] = field(default_factory=list)
    reused: bool = False
    recipe: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def base_name(base_ref: str) -> str:
    """The folder-name part of a model reference: ``name`` of ``name@sha`` or of a hub id."""
    return canonical_model_id(base_ref).split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def model_folder_name(base_ref: str, data_digest: str, recipe: EmbedRecipe) -> str:
    """``<base name>-ft-<digest8>``; the digest covers base model id, data digest and recipe."""
    key = f"{canonical_model_id(base_ref)}\x1f{data_digest}\x1f{recipe.to_json()}"
    return f"{base_name(base_ref)}-ft-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def planned_steps(n_examples: int, recipe: EmbedRecipe) -> int:
    """Optimizer steps the recipe makes on ``n_examples`` pairs."""
    if recipe.max_steps is not None:
        return recipe.max_steps
    per_epoch = -(-n_examples // recipe.batch_size)
    return max(1, round(per_epoch * recipe.epochs))


def check_pairs(pairs: Sequence[TrainingPair], recipe: EmbedRecipe) -> None:
    """Refuse pairs the recipe cannot train on: none at all, or a recipe that trains against
    hard negatives given pairs built without them (``build_pairs(negatives=False)``)."""
    if not pairs:
        raise EmbedFinetuneError("no training pairs: the corpus gave no ICT pairs to learn")
    if recipe.hard_negative:
        missing = sum(not p.negative.strip() for p in pairs)
        if missing:
            raise EmbedFinetuneError(
                f"the recipe trains against hard negatives but {missing} of {len(pairs)} pairs "
                "have none: build the pairs with negatives=True"
            )


def training_columns(pairs: Sequence[TrainingPair], recipe: EmbedRecipe) -> dict[str, list[str]]:
    """The trainer's dataset: anchor and positive, and the BM25 negative only when the recipe
    trains against it (MultipleNegativesRankingLoss reads every column after the anchor as a
    candidate, so an unused negative must not be there at all)."""
    check_pairs(pairs, recipe)
    columns = {"anchor": [p.query for p in pairs], "positive": [p.positive for p in pairs]}
    if recipe.hard_negative:
        columns["negative"] = [p.negative for p in pairs]
    return columns


def finetune_embedder(
    base_ref: str,
    pairs: Sequence[TrainingPair],
    recipe: EmbedRecipe,
    store_dir: Path | str,
    *,
    data_digest: str,
    progress: Callable[[int, int, float], None] | None = None,
    device: str | None = None,
) -> tuple[Path, FinetuneStats]:
    """Train ``base_ref`` (a sentence-transformers folder or id) on ``pairs`` and save it under
    ``store_dir`` (see the module docstring); an existing folder for the same base, data and
    recipe is returned as it is. ``progress(step, total_steps, loss)`` after each logged step.
    Returns (folder, stats)."""
    recipe.validate()
    check_pairs(pairs, recipe)
    base_id = canonical_model_id(base_ref)
    target = Path(store_dir) / model_folder_name(base_ref, data_digest, recipe)
    if (target / STATS_FILE).is_file():
        saved = json.loads((target / STATS_FILE).read_text(encoding="utf-8"))
        stats = FinetuneStats(**{**saved, "reused": True})
        return target, stats

    result: dict[str, FinetuneStats] = {}

    def build(tmp: Path) -> None:
        result["stats"] = _train(
            base_ref, base_id, pairs, recipe, tmp, data_digest, progress, device
        )

    publish_dir(target, build, complete_marker=STATS_FILE)
    if "stats" not in result:  # another process published the same folder meanwhile
        saved = json.loads((target / STATS_FILE).read_text(encoding="utf-8"))
        return target, FinetuneStats(**{**saved, "reused": True})
    stats = result["stats"]
    # The id is the published folder's (its name, not the temp one's, plus the weights digest).
    stats.model_id = canonical_model_id(str(target))
    atomic_write_json(target / STATS_FILE, stats.to_dict())
    return target, stats


def _train(
    base_ref: str,
    base_id: str,
    pairs: Sequence[TrainingPair],
    recipe: EmbedRecipe,
    out: Path,
    data_digest: str,
    progress: Callable[[int, int, float], None] | None,
    device: str | None,
) -> FinetuneStats:
    import importlib.util

    if importlib.util.find_spec("datasets") is None:
        # sentence-transformers' trainer needs it (its `train` extra); say so before loading.
        raise EmbedFinetuneError(
            "fine-tuning the embedding model needs the `datasets` package "
            "(sentence-transformers' `train` extra): install it into the environment"
        )
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import PrinterCallback, TrainerCallback, set_seed

    set_seed(recipe.seed)
    # A fresh copy: the process-wide embedder cache must never see weights being trained.
    model = SentenceTransformer(base_ref, device=device or "cpu")
    dataset = Dataset.from_dict(training_columns(pairs, recipe))
    total = planned_steps(len(pairs), recipe)
    losses: list[float] = []

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                if progress is not None:
                    progress(int(state.global_step), total, float(logs["loss"]))

    with tempfile.TemporaryDirectory(prefix="llmops-embed-ft-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            max_steps=recipe.max_steps if recipe.max_steps is not None else -1,
            num_train_epochs=recipe.epochs,
            per_device_train_batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            warmup_steps=recipe.warmup_ratio,  # < 1: a ratio of the total steps
            lr_scheduler_type="linear",
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            logging_steps=1,
            logging_nan_inf_filter=False,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            seed=recipe.seed,
            data_seed=recipe.seed,
            use_cpu=(device or "cpu") == "cpu",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=MultipleNegativesRankingLoss(model, scale=recipe.scale),
            callbacks=[Progress()],
        )
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        steps = int(trainer.state.global_step)
    model.save(str(out), create_model_card=False)
    stats = FinetuneStats(
        model_id=canonical_model_id(str(out)),
        base_model_id=base_id,
        data_digest=data_digest,
        examples=len(pairs),
        steps=steps,
        examples_seen=steps * recipe.batch_size,
        seconds=round(seconds, 2),
        final_loss=losses[-1] if losses else None,
        losses=losses,
        recipe=recipe.to_dict(),
    )
    atomic_write_json(out / STATS_FILE, stats.to_dict())
    return stats


@dataclass(frozen=True)
class FinetunedEmbedding:
    """What the ``embedding_finetune`` asset outputs (the shadow index's input): the model's
    id (``canonical_model_id(path)``), its folder, and its registered version."""

    model_id: str
    path: str
    base_model_id: str
    registered_name: str
    version: str
    data_digest: str
    run_id: str
    examples: int
    steps: int
    seconds: float


#: Where a registered version's folder lives in its run's artifacts.
ARTIFACT_PATH = "embedding_model"


def version_tags(stats: FinetuneStats) -> dict[str, str]:
    """The registry tags of a fine-tuned embedding version (the shared contract)."""
    return {
        "embedding.model_id": stats.model_id,
        "embedding.base_model_id": stats.base_model_id,
        "data.digest": stats.data_digest,
        "recipe": json.dumps(stats.recipe, sort_keys=True),
        "examples": str(stats.examples),
        "steps": str(stats.steps),
    }


def find_registered_version(client: Any, name: str, model_id: str) -> Any | None:
    """The newest version of ``name`` tagged ``embedding.model_id`` = ``model_id`` (None: none,
    or no such registered model)."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    found = [v for v in versions if (v.tags or {}).get("embedding.model_id") == model_id]
    return max(found, key=lambda v: int(v.version)) if found else None


def register_embedding(
    client: Any, name: str, folder: Path, *, run_id: str, artifact_uri: str, stats: FinetuneStats
) -> str:
    """Log ``folder`` into the run's artifacts (:data:`ARTIFACT_PATH`) and register it as a new
    version of ``name`` with :func:`version_tags`; returns the version number. MLflow 3's
    ``register_model`` wants a logged model, so the version is created from the artifact URI
    (as the LoRA adapters are)."""
    from llmops_dagster.models.registry import register_version

    client.log_artifacts(run_id, str(folder), artifact_path=ARTIFACT_PATH)
    return register_version(
        client,
        name,
        source=f"{artifact_uri.rstrip('/')}/{ARTIFACT_PATH}",
        run_id=run_id,
        tags=version_tags(stats),
        model_description="Embedding models fine-tuned on the indexed corpus (llmops-dagster "
        "embedding_finetune): sentence-transformers folders.",
        version_description=f"{stats.model_id} fine-tuned from {stats.base_model_id} in run "
        f"{run_id}",
    )
