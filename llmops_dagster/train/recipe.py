"""Choosing the LoRA recipe (rank, modules, learning rate, steps) on the validation split.

Issue #24: the recipe is chosen on a validation split, never on the golden set. Each candidate
trains for the same short budget (``search_steps``, the same seed, so the same LoRA init and
batch order) on the fine-tuning dataset's *train* split, and is scored by its loss on that
dataset's *validation* split — the held-out part of ``finetune_dataset``'s fixed-seed split
(or one seeded sample of it, the same for every candidate, when a CPU budget asks for fewer).
The golden set is the evaluation gate's test data: choosing on it would make the gate's verdict
optimistic, so it is not an argument here and cannot reach the scorer.

The ranking is by validation loss, ascending; ties keep the candidates' order (the first listed
wins), and a candidate whose loss is NaN or infinite is ranked last with the reason. The winner
is then trained for the full budget by the caller (``lora_adapter``), which registers it.

A short budget favours recipes that learn fast (higher learning rates, more modules) over ones
that would catch up later: that bias is the price of a search that fits a CPU demo. The full
ranking is kept so the choice can be reviewed.

Tracking: each candidate is a *nested* MLflow run under the caller's run (tag
``mlflow.parentRunId``, what ``mlflow.start_run(nested=True)`` writes), with its recipe as
params and ``val_loss`` as a metric, so the MLflow UI lists the candidates under the asset run
and compares them side by side; the caller's run gets the chosen recipe's name and the ranking
as a table artifact. Children carry no lineage tags: lookups by lineage find the asset run only.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmops_dagster.train.lora import LoraParams, TrainingError, fit_lora

if TYPE_CHECKING:
    from llmops_dagster.models.local import LoadedModel
    from llmops_dagster.tracking.runs import RunHandle
    from llmops_dagster.train.dataset import SFTDataset, SFTExample

__all__ = [
    "CandidateResult",
    "CandidateScore",
    "Recipe",
    "RecipeSearch",
    "score_candidate",
    "select_recipe",
]

log = logging.getLogger(__name__)

#: The parent-run tag MLflow's UI nests runs by (what ``start_run(nested=True)`` sets).
PARENT_RUN_TAG = "mlflow.parentRunId"
#: Tag naming the candidate on its nested run.
TAG_RECIPE = "llmops.recipe"
#: The ranking's artifact on the caller's run.
RANKING_ARTIFACT = "recipe_search.json"


@dataclass(frozen=True)
class Recipe:
    """What the search chooses between. ``max_steps`` is the full-training budget this recipe
    asks for (None: the caller's default); the search compares candidates at equal steps."""

    r: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    learning_rate: float = 1e-3
    max_steps: int | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """``name``, or one derived from the knobs, e.g. ``r8-a16-q_proj+v_proj-lr0.001``."""
        if self.name:
            return self.name
        modules = "+".join(self.target_modules)
        return f"r{self.r}-a{self.alpha}-{modules}-lr{self.learning_rate:g}"

    def describe(self) -> str:
        steps = f", {self.max_steps} steps" if self.max_steps else ""
        return (
            f"{self.label} (r={self.r}, alpha={self.alpha}, "
            f"modules={','.join(self.target_modules)}, lr={self.learning_rate:g}{steps})"
        )

    def lora_params(self, *, max_steps: int, **knobs: Any) -> LoraParams:
        """This recipe as training parameters for a run of ``max_steps``."""
        return LoraParams(
            r=self.r,
            alpha=self.alpha,
            target_modules=tuple(self.target_modules),
            learning_rate=self.learning_rate,
            max_steps=max_steps,
            **knobs,
        )


@dataclass(frozen=True)
class CandidateScore:
    """What training one candidate gives the search: its validation loss (raw: NaN/inf kept),
    the optimizer steps it took and its per-step training losses."""

    val_loss: float
    steps: int
    train_losses: tuple[float, ...] = ()


#: Trains one candidate: (fresh base, train examples, validation examples, params) → score.
CandidateTrainer = Callable[
    ["LoadedModel", "Sequence[SFTExample]", "Sequence[SFTExample]", LoraParams], CandidateScore
]


def score_candidate(
    base: LoadedModel,
    train: Sequence[SFTExample],
    validation: Sequence[SFTExample],
    params: LoraParams,
) -> CandidateScore:
    """Train ``params`` into ``base`` (changed in place) and score it on ``validation``."""
    fit = fit_lora(base, train, validation, params, evaluate_before=False)
    val_loss = fit.eval_loss_after if fit.eval_loss_after is not None else math.nan
    return CandidateScore(val_loss=val_loss, steps=fit.steps, train_losses=tuple(fit.losses))


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's place in the ranking (``rank`` 1 is the winner)."""

    recipe: Recipe
    rank: int
    val_loss: float
    steps: int
    seconds: float
    diverged: str | None = None
    run_id: str | None = None

    @property
    def label(self) -> str:
        return self.recipe.label

    def row(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "recipe": self.label,
            "r": self.recipe.r,
            "alpha": self.recipe.alpha,
            "target_modules": ",".join(self.recipe.target_modules),
            "learning_rate": self.recipe.learning_rate,
            "max_steps": self.recipe.max_steps,
            "val_loss": None if self.diverged else self.val_loss,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "diverged": self.diverged or "",
            "mlflow_run_id": self.run_id or "",
        }


@dataclass
class RecipeSearch:
    """Every candidate, best first, and what the search cost."""

    ranking: list[CandidateResult]
    search_steps: int
    seconds: float
    n_validation: int

    @property
    def winner(self) -> CandidateResult:
        return self.ranking[0]

    def table(self) -> list[dict[str, Any]]:
        return [c.row() for c in self.ranking]


def _divergence(score: CandidateScore) -> str | None:
    """Why a candidate counts as diverged, or None."""
    for step, loss in enumerate(score.train_losses, start=1):
        if not math.isfinite(loss):
            return f"training loss is {loss} at step {step}"
    if not math.isfinite(score.val_loss):
        return f"validation loss is {score.val_loss}"
    return None


def select_recipe(
    base_loader: Callable[[], LoadedModel],
    dataset: SFTDataset,
    run: RunHandle | None,
    candidates: Sequence[Recipe],
    search_steps: int,
    *,
    batch_size: int = 4,
    max_seq_len: int = 512,
    dropout: float = 0.05,
    seed: int = 13,
    warmup_steps: int = 0,
    validation_limit: int | None = None,
    trainer: CandidateTrainer = score_candidate,
) -> RecipeSearch:
    """Train every candidate for ``search_steps`` on ``dataset.train``, score it on
    ``dataset.validation``, and rank them (lowest validation loss first; ties: the earlier
    candidate; diverged: last, with the reason).

    ``base_loader`` returns a fresh private copy of the base for each candidate (training
    injects LoRA layers in place). With ``run``, each candidate is logged as a nested run of it
    and ``run`` gets the ranking; ``trainer`` trains and scores one candidate (injectable: the
    selection logic is tested without a model). ``warmup_steps`` defaults to 0: in a budget of
    a few steps a warm-up would spend most of it below the learning rate being compared.
    ``validation_limit`` scores every candidate on the same seeded sample of that many
    validation examples (the split is id-sorted, so its head would be a biased sample): a
    pass over the validation split costs about as much as a few training steps on a CPU.
    Every candidate is checked before any trains; a search in which every candidate diverged
    raises :class:`TrainingError`.
    """
    if not candidates:
        raise TrainingError("recipe search: candidates is empty (give at least one recipe)")
    if search_steps < 1:
        raise TrainingError(f"recipe search: search_steps={search_steps} must be >= 1")
    if validation_limit is not None and validation_limit < 1:
        raise TrainingError(f"recipe search: validation_limit={validation_limit} must be >= 1")
    if not dataset.train:
        raise TrainingError("the fine-tuning dataset has no training examples")
    if not dataset.validation:
        raise TrainingError(
            "recipe search scores candidates on the validation split, and this dataset has "
            "none: build it with val_fraction > 0 (finetune_dataset config val_fraction), or "
            "turn recipe_search off"
        )
    labels = [c.label for c in candidates]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise TrainingError(f"recipe search: candidate names must be unique; repeated: {repeated}")
    knobs = {
        "batch_size": batch_size,
        "max_seq_len": max_seq_len,
        "dropout": dropout,
        "seed": seed,
        "warmup_steps": warmup_steps,
    }
    params = [c.lora_params(max_steps=search_steps, **knobs) for c in candidates]
    for recipe, p in zip(candidates, params, strict=True):
        try:
            p.validate()
        except TrainingError as exc:
            raise TrainingError(f"recipe candidate {recipe.label}: {exc}") from exc
        if recipe.max_steps is not None and recipe.max_steps < 1:
            raise TrainingError(
                f"recipe candidate {recipe.label}: max_steps={recipe.max_steps} must be >= 1"
            )

    validation = _validation_sample(dataset.validation, validation_limit, seed)
    started = time.perf_counter()
    scored: list[tuple[Recipe, CandidateScore, float, str | None, str | None]] = []
    for recipe, p in zip(candidates, params, strict=True):
        child = _open_child(run, recipe, p, len(validation)) if run is not None else None
        t0 = time.perf_counter()
        try:
            score = trainer(base_loader(), dataset.train, validation, p)
        except BaseException:
            if child is not None and run is not None:
                run.client.set_terminated(child, "FAILED")
            raise
        seconds = time.perf_counter() - t0
        reason = _divergence(score)
        log.info(
            "recipe %s: validation loss %s after %d steps (%.1f s)%s",
            recipe.label,
            score.val_loss,
            score.steps,
            seconds,
            f"; diverged: {reason}" if reason else "",
        )
        if child is not None and run is not None:
            _close_child(run, child, score, seconds, reason)
        scored.append((recipe, score, seconds, reason, child))

    # sorted() is stable: equal losses keep the candidates' order, so the earlier one wins.
    order = sorted(
        range(len(scored)),
        key=lambda i: (1, 0.0) if scored[i][3] else (0, scored[i][1].val_loss),
    )
    ranking = [
        CandidateResult(
            recipe=scored[i][0],
            rank=rank,
            val_loss=scored[i][1].val_loss,
            steps=scored[i][1].steps,
            seconds=scored[i][2],
            diverged=scored[i][3],
            run_id=scored[i][4],
        )
        for rank, i in enumerate(order, start=1)
    ]
    search = RecipeSearch(
        ranking=ranking,
        search_steps=search_steps,
        seconds=time.perf_counter() - started,
        n_validation=len(validation),
    )
    if run is not None:
        import pandas as pd

        run.log_table(pd.DataFrame(search.table()), RANKING_ARTIFACT)
    if ranking[0].diverged:
        reasons = "; ".join(f"{c.label}: {c.diverged}" for c in ranking)
        raise TrainingError(
            f"recipe search: every candidate diverged ({reasons}): lower their learning_rate"
        )
    if run is not None:
        run.log(
            params={
                "recipe.chosen": search.winner.label,
                "recipe.search_steps": search_steps,
                "recipe.candidates": len(ranking),
                "recipe.n_validation": len(validation),
            },
            metrics={"recipe.search_seconds": search.seconds},
        )
    return search


def _validation_sample(
    validation: Sequence[SFTExample], limit: int | None, seed: int
) -> list[SFTExample]:
    """All of ``validation``, or a seeded sample of ``limit`` examples in the split's order."""
    if limit is None or len(validation) <= limit:
        return list(validation)
    keep = set(random.Random(seed).sample(range(len(validation)), limit))
    return [example for i, example in enumerate(validation) if i in keep]


def _open_child(run: RunHandle, recipe: Recipe, params: LoraParams, n_validation: int) -> str:
    child = run.client.create_run(
        run.experiment_id,
        run_name=f"recipe {recipe.label}",
        tags={PARENT_RUN_TAG: run.run_id, TAG_RECIPE: recipe.label},
    )
    child_id: str = child.info.run_id
    from mlflow.entities import Param

    values = {
        "r": params.r,
        "alpha": params.alpha,
        "target_modules": ",".join(params.target_modules),
        "learning_rate": params.learning_rate,
        "search_steps": params.max_steps,
        "full_max_steps": recipe.max_steps if recipe.max_steps is not None else "",
        "batch_size": params.batch_size,
        "max_seq_len": params.max_seq_len,
        "seed": params.seed,
        "n_validation": n_validation,
    }
    run.client.log_batch(child_id, params=[Param(k, str(v)) for k, v in values.items()])
    return child_id


def _close_child(
    run: RunHandle, child: str, score: CandidateScore, seconds: float, reason: str | None
) -> None:
    for step, loss in enumerate(score.train_losses, start=1):
        run.client.log_metric(child, "train_loss", loss, step=step)
    if reason is None:
        run.client.log_metric(child, "val_loss", score.val_loss, step=score.steps)
    else:
        run.client.set_tag(child, "llmops.diverged", reason)
    run.client.log_metric(child, "search_seconds", seconds)
    run.client.set_terminated(child, "FINISHED")
