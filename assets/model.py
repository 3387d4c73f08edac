"""Fine-tuning assets: an SFT dataset built with the live retriever, and a LoRA adapter that is
registered in the MLflow registry (promotion to `champion` is the evaluation gate's job)."""

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from assets._metadata import md
from assets.evaluate import EVALUATION_POOL
from llmops_dagster.resources import (
    DatasetsResource,
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
    WarehouseResource,
    build_rag_pipeline,
)

if TYPE_CHECKING:
    from llmops_dagster.train.recipe import Recipe, RecipeSearch


class FinetuneDatasetConfig(dg.Config):
    context_k: int = 3
    """Retrieved chunks per question, as serving will see them."""
    context_groups: list[str] | None = None
    """Groups the context is retrieved as (besides public). None: the training audience's
    (LLMOPS_TRAIN_GROUPS; default none, so public documents only). Groups beyond the training
    audience are refused: the adapter is served to that audience and would learn their text."""
    val_fraction: float = 0.2
    seed: int = 13
    """Seed of the train/validation split (over hand-written and drafted items together)."""
    # = train.mix.DEFAULT_DRAFTED_ITEMS, spelled out: importing train/ here would load it (and
    # what it imports) into every process that loads the code location.
    drafted_items: int = Field(default=120, ge=0)
    """RAFT items drafted from the indexed chunks the context audience may read (0: none):
    a seeded sample spread over documents, after dropping candidates that restate a golden
    item. 120 = twice the demo's 60 hand-written items."""
    drafted_seed: int = 13
    """Seed of the drafted sample and of each oracle chunk's place among its distractors."""


class RecipeCandidate(dg.Config):
    """One LoRA recipe the search tries (``llmops_dagster.train.recipe.Recipe``)."""

    r: int = 8
    alpha: int = 16
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = 1e-3
    max_steps: int | None = None
    """Full-training steps if this recipe wins (default: the asset's max_steps)."""
    name: str | None = None
    """Its name in metadata and MLflow (default: derived, e.g. r8-a16-q_proj+v_proj-lr0.001)."""


def _default_candidates() -> list[RecipeCandidate]:
    # Two, because each costs a short training run plus a validation pass: measured on the
    # 2-core demo box (one torch thread, batches of 4 × 320 tokens) a candidate takes ~38 s at
    # 2 steps scored on 8 validation examples (~53 s at 3 steps and 12), so the search adds
    # about a minute and a quarter; each extra candidate adds as much again. Today's recipe
    # comes first, so it wins ties. The second asks what a short search can answer fairly: LoRA
    # on every attention projection instead of q/v only, at the same learning rate. A
    # learning-rate grid would be decided by the budget rather than the data (in a few steps
    # the higher rate nearly always looks better), and rank matters least at this size (r=8 vs
    # 16 at the same alpha/r learn alike): both are a config away.
    return [
        RecipeCandidate(r=8, alpha=16, target_modules=["q_proj", "v_proj"], learning_rate=1e-3),
        RecipeCandidate(
            r=8,
            alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            learning_rate=1e-3,
        ),
    ]


class LoraTrainingConfig(dg.Config):
    max_steps: int | None = None
    """Optimizer steps of the full training (default: the models resource's lora_max_steps)."""
    r: int = 8
    """r, alpha, target_modules, learning_rate: the recipe when recipe_search is off."""
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = 1e-3
    batch_size: int = 4
    max_seq_len: int = 320
    recipe_search: bool = True
    """Choose the recipe among `candidates` by validation loss (the fine-tuning dataset's
    validation split, never the golden set) before the full training."""
    candidates: list[RecipeCandidate] = Field(default_factory=_default_candidates)
    search_steps: int = Field(default=2, ge=1)
    """Steps each candidate trains in the search (at most max_steps). CPU-demo sized: raise it
    (and search_validation_examples) where steps are cheap, e.g. on a GPU."""
    search_validation_examples: int | None = Field(default=8, ge=1)
    """Validation examples each candidate is scored on: a seeded sample of the split, the same
    for every candidate, so the comparison is paired (None: all of it). On a CPU a pass over
    the split costs about as much as a few training steps."""


@dg.asset(
    deps=["search_index"],
    group_name="model",
    kinds={"python", "mlflow"},
    owners=["team:ml-platform"],
)
def finetune_dataset(
    context: dg.AssetExecutionContext,
    config: FinetuneDatasetConfig,
    datasets: DatasetsResource,
    models: ModelsResource,
    elasticsearch: ElasticsearchResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
):
    """Instruction/response pairs in the generator's chat template, fixed-seed train/validation
    split: the training QA set, each item with the context the live RAG pipeline retrieves, plus
    RAFT items drafted from the active chunks (each question answered by one sentence of its
    chunk, that chunk placed among retrieved distractors, the answer citing it); drafted
    candidates that restate a golden item are dropped (`n_dropped_golden_overlap`). Only what
    the training audience (LLMOPS_TRAIN_GROUPS, default public) may read: QA items with other
    `groups` are left out (`n_dropped_audience`), chunks outside it are never drafted from
    (`n_chunks_dropped_audience`), context is retrieved within it."""
    from pathlib import Path

    from llmops_dagster.access import AccessError, Principal
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.train.mix import build_training_mix, distractor_search
    from llmops_dagster.train.raft import read_chunk_records

    try:
        training = Principal("training", frozenset(datasets.train_groups))
    except AccessError as exc:
        raise dg.Failure(f"datasets resource train_groups (LLMOPS_TRAIN_GROUPS): {exc}") from exc
    wanted = datasets.train_groups if config.context_groups is None else config.context_groups
    try:
        principal = Principal("finetune", frozenset(wanted))
    except AccessError as exc:
        raise dg.Failure(f"finetune_dataset config context_groups: {exc}") from exc
    beyond = sorted(principal.groups - training.groups)
    if beyond:
        raise dg.Failure(
            f"finetune_dataset config context_groups {beyond} are beyond the training audience "
            f"{training.visible_groups} (LLMOPS_TRAIN_GROUPS): the adapter is served to that "
            "audience and would learn text it may not read"
        )
    pipeline = build_rag_pipeline(
        elasticsearch, models, mlflow, retrieval=RetrievalSettings(k=config.context_k)
    )
    golden = load_golden(datasets.golden_path)
    with warehouse.get_connection() as con:
        chunks = read_chunk_records(con) if config.drafted_items else []
    if config.drafted_items and not any(principal.can_read(c.audience) for c in chunks):
        raise dg.Failure(
            f"finetune_dataset config drafted_items={config.drafted_items}, but the warehouse "
            f"({warehouse.location}) holds no active chunk the audience "
            f"{principal.visible_groups} may read: materialize chunks first, or set "
            "drafted_items to 0"
        )
    mix = build_training_mix(
        Path(datasets.train_qa_path),
        tokenizer=models.base_model().tokenizer,
        prompt=pipeline.prompt,
        chunks=chunks,
        golden=golden.items,
        golden_digest=golden.version,
        search=distractor_search(
            pipeline.retriever,
            mode=pipeline.retrieval.mode,
            k=config.context_k,
        ),
        k=config.context_k,
        drafted_items=config.drafted_items,
        drafted_seed=config.drafted_seed,
        audience=training,
        reader=principal,
        fallback_context=pipeline.context_fn(principal),
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    dataset = mix.dataset
    if dataset.dropped:
        context.log.info(
            f"{dataset.dropped} QA items left out: the training audience "
            f"{','.join(training.visible_groups)} may not read them"
        )
    drafts = mix.drafts
    context.log.info(
        f"drafted {len(drafts.items)} of {drafts.candidates} candidates from "
        f"{drafts.chunks_seen} chunks ({drafts.dropped_audience} outside the audience); "
        f"{drafts.dropped_golden_overlap} dropped for restating a golden item "
        f"({drafts.rule.describe()})"
    )
    folder = Path(datasets.datasets_dir)
    path = dataset.write_jsonl(folder / f"sft-{dataset.digest[:12]}.jsonl")
    qa_path = mix.write_qa_jsonl(folder / f"qa-mix-{dataset.source_digest[:12]}.jsonl")
    summary = mix.metadata()
    context_groups = ",".join(principal.visible_groups)
    counts = {k: v for k, v in summary.items() if k.startswith("n_")}
    lineage = mlflow.log_asset_run(
        context,
        params={
            **{k: v for k, v in summary.items() if k != "digest" and k not in counts},
            "context_groups": context_groups,
        },
        metrics=counts,
        tags={"dataset.digest": dataset.digest, "golden.digest": golden.version},
    )
    drafted_ids = {d.item.id for d in drafts.items}
    shown = [
        *[e for e in dataset.train if e.id not in drafted_ids][:3],
        *[e for e in dataset.train if e.id in drafted_ids][:3],
    ]
    preview = [
        {"id": ex.id, "prompt": ex.prompt[-120:], "completion": ex.completion[:80]} for ex in shown
    ]
    return dg.Output(
        dataset,
        metadata={
            **lineage,
            **summary,
            "context_groups": context_groups,
            "path": str(path),
            "qa_path": str(qa_path),
            "preview": md(preview, ["id", "prompt", "completion"]),
        },
    )


@dg.asset(
    group_name="model",
    kinds={"pytorch", "mlflow"},
    owners=["team:ml-platform"],
    # One at a time with evaluations, so that it may train on every core.
    pool=EVALUATION_POOL,
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    config: LoraTrainingConfig,
    finetune_dataset,
    models: ModelsResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """A LoRA adapter (peft) on the generator, trained with transformers' Trainer, logged and
    registered as a new model version. With `recipe_search` (the default) the recipe is first
    chosen among `candidates`: each trains `search_steps` on the train split and the lowest
    loss on the fine-tuning dataset's validation split wins (never the golden set; each
    candidate is a nested MLflow run, `recipe/<name>/val_loss` in the metadata); the winner
    then trains for the full `max_steps`. It does not move `champion`: the evaluation gate
    does. Trains with the models' training threads (`train_torch_threads`, default every core:
    it runs in the evaluation pool, one at a time with evaluations)."""
    from pathlib import Path

    from llmops_dagster.search.aliases import current_index
    from llmops_dagster.train.lora import TrainingError, train_lora
    from llmops_dagster.train.recipe import Recipe, RecipeSearch, select_recipe

    mlflow.store()  # fail fast, naming the tracking URI, before minutes of training
    models = models.for_training()
    index_version = current_index(elasticsearch.get_client(), elasticsearch.alias)
    max_steps = config.max_steps or models.lora_max_steps
    recipe = Recipe(
        r=config.r,
        alpha=config.alpha,
        target_modules=tuple(config.target_modules),
        learning_rate=config.learning_rate,
    )
    search: RecipeSearch | None = None
    with mlflow.asset_run(context) as run:
        if config.recipe_search:
            candidates = [
                Recipe(
                    r=c.r,
                    alpha=c.alpha,
                    target_modules=tuple(c.target_modules),
                    learning_rate=c.learning_rate,
                    max_steps=c.max_steps,
                    name=c.name,
                )
                for c in config.candidates
            ]
            try:
                search = select_recipe(
                    lambda: models.base_model(fresh=True),
                    finetune_dataset,
                    run,
                    candidates,
                    # Never search longer than the winner trains (a 2-step run searches 2).
                    min(config.search_steps, max_steps),
                    batch_size=config.batch_size,
                    max_seq_len=config.max_seq_len,
                    dropout=config.dropout,
                    validation_limit=config.search_validation_examples,
                )
            except TrainingError as exc:
                raise dg.Failure(f"lora_adapter recipe search (config candidates): {exc}") from exc
            recipe = search.winner.recipe
            context.log.info(
                f"recipe search: {recipe.describe()} won on validation loss "
                f"{search.winner.val_loss:.4f} over {len(search.ranking)} candidates "
                f"({search.search_steps} steps each, {search.seconds:.0f} s)"
            )
        result = train_lora(
            models.base_model(fresh=True),
            finetune_dataset,
            run,
            r=recipe.r,
            alpha=recipe.alpha,
            dropout=config.dropout,
            target_modules=recipe.target_modules,
            max_steps=recipe.max_steps or max_steps,
            learning_rate=recipe.learning_rate,
            batch_size=config.batch_size,
            max_seq_len=config.max_seq_len,
            index_version=index_version,
            registered_model_name=models.adapter_model_name,
            output_dir=Path(models.cache_dir) / "adapters" / "trained" / run.run_id,
        )
    context.log.info(
        f"registered {result.registered_model_name} v{result.model_version} "
        f"(eval loss {result.eval_loss_before} → {result.eval_loss_after})"
    )
    return dg.MaterializeResult(
        metadata={
            **mlflow.run_metadata(run),
            "registered_model": str(result.registered_model_name),
            "model_version": str(result.model_version),
            "model_uri": f"models:/{result.registered_model_name}/{result.model_version}",
            "base_model_id": result.base_model_id,
            "dataset_digest": result.dataset_digest,
            "index_version": str(result.index_version),
            "steps": result.steps,
            "train_loss": result.train_loss,
            "eval_loss_before": result.eval_loss_before,
            "eval_loss_after": result.eval_loss_after,
            "tokens_per_s": round(result.tokens_per_s, 1),
            "device": result.device,
            **_recipe_metadata(recipe, search),
        }
    )


def _recipe_metadata(recipe: "Recipe", search: "RecipeSearch | None") -> dict[str, Any]:
    """The chosen recipe, and with a search every candidate's validation loss (a number per
    candidate, so the UI plots it across materializations) and the ranking."""
    if search is None:
        return {"recipe/chosen": recipe.describe(), "recipe/candidates": 0, "search_seconds": 0.0}
    metadata: dict[str, Any] = {
        "recipe/chosen": recipe.describe(),
        "recipe/candidates": len(search.ranking),
        "search_steps": search.search_steps,
        "search_validation_examples": search.n_validation,
        "search_seconds": round(search.seconds, 1),
    }
    for candidate in search.ranking:
        if candidate.diverged:
            metadata[f"recipe/{candidate.label}/diverged"] = candidate.diverged
        else:
            metadata[f"recipe/{candidate.label}/val_loss"] = candidate.val_loss
    metadata["recipe/ranking"] = md(
        search.table(),
        ["rank", "recipe", "val_loss", "steps", "seconds", "diverged"],
    )
    return metadata
