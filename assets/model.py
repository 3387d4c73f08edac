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
    mlflow: MlflowResource,
):
    """Instruction/response pairs from the training QA set, each with the context the live
    RAG pipeline retrieves, in the generator's chat template; fixed-seed train/validation
    split. Only what the training audience (LLMOPS_TRAIN_GROUPS, default public) may read:
    items with other `groups` are left out (`n_dropped_audience`), context is retrieved within
    it."""
    from pathlib import Path

    from llmops_dagster.access import AccessError, Principal
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.train.dataset import build_sft_dataset

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
    dataset = build_sft_dataset(
        Path(datasets.train_qa_path),
        tokenizer=models.base_model().tokenizer,
        prompt=pipeline.prompt,
        context_fn=pipeline.context_fn(principal),
        val_fraction=config.val_fraction,
        seed=config.seed,
        audience=training,
    )
    if dataset.dropped:
        context.log.info(
            f"{dataset.dropped} QA items left out: the training audience "
            f"{','.join(training.visible_groups)} may not read them"
        )
    path = Path(datasets.datasets_dir) / f"sft-{dataset.digest[:12]}.jsonl"
    dataset.write_jsonl(path)
    summary = dataset.summary()
    context_groups = ",".join(principal.visible_groups)
    lineage = mlflow.log_asset_run(
        context,
        params={
            **{k: v for k, v in summary.items() if k != "digest"},
            "context_groups": context_groups,
        },
        metrics={
            "n_train": summary["n_train"],
            "n_validation": summary["n_validation"],
            "n_dropped_audience": summary["n_dropped_audience"],
        },
        tags={"dataset.digest": dataset.digest},
    )
    preview = [
        {"prompt": ex.prompt[-120:], "completion": ex.completion[:80]} for ex in dataset.train[:5]
    ]
    return dg.Output(
        dataset,
        metadata={
            **lineage,
            **summary,
            "context_groups": context_groups,
            "path": str(path),
            "preview": md(preview, ["prompt", "completion"]),
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
