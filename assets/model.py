"""Fine-tuning assets: an SFT dataset built with the live retriever, and a LoRA adapter that is
registered in the MLflow registry (promotion to `champion` is the evaluation gate's job)."""

import dagster as dg
from pydantic import Field

from assets._metadata import md
from llmops_dagster.resources import (
    DatasetsResource,
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
    WarehouseResource,
    build_rag_pipeline,
)


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


class LoraTrainingConfig(dg.Config):
    max_steps: int | None = None
    """Optimizer steps (default: the models resource's lora_max_steps)."""
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = 1e-3
    batch_size: int = 4
    max_seq_len: int = 320


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


@dg.asset(group_name="model", kinds={"pytorch", "mlflow"}, owners=["team:ml-platform"])
def lora_adapter(
    context: dg.AssetExecutionContext,
    config: LoraTrainingConfig,
    finetune_dataset,
    models: ModelsResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """A LoRA adapter (peft) on the generator, trained with transformers' Trainer, logged and
    registered as a new model version. It does not move `champion`: the evaluation gate does."""
    from pathlib import Path

    from llmops_dagster.search.aliases import current_index
    from llmops_dagster.train.lora import train_lora

    mlflow.store()  # fail fast, naming the tracking URI, before minutes of training
    index_version = current_index(elasticsearch.get_client(), elasticsearch.alias)
    base = models.base_model(fresh=True)
    with mlflow.asset_run(context) as run:
        result = train_lora(
            base,
            finetune_dataset,
            run,
            r=config.r,
            alpha=config.alpha,
            dropout=config.dropout,
            target_modules=tuple(config.target_modules),
            max_steps=config.max_steps or models.lora_max_steps,
            learning_rate=config.learning_rate,
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
        }
    )
