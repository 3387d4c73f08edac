"""Fine-tuning assets: an SFT dataset built with the live retriever, and a LoRA adapter that is
registered in the MLflow registry (promotion to `champion` is the evaluation gate's job)."""

import dagster as dg
from pydantic import Field

from assets._lineage import track, upstream_mlflow_runs
from assets._metadata import md
from llmops_dagster.resources import ElasticsearchResource, LlmopsSettingsResource, MlflowResource
from llmops_dagster.tracking.lineage import (
    TAG_ASSET_KEY,
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN,
    code_version,
)


class FinetuneDatasetConfig(dg.Config):
    context_k: int = 3
    """Retrieved chunks per question, as serving will see them."""
    val_fraction: float = 0.2
    seed: int = 13


class LoraTrainingConfig(dg.Config):
    max_steps: int | None = None
    """Optimizer steps (default LLMOPS_LORA_MAX_STEPS)."""
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
    llmops: LlmopsSettingsResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
):
    """Instruction/response pairs from the training QA set, each with the context the live
    retriever returns, in the generator's chat template; fixed-seed train/validation split."""
    from llmops_dagster.rag.llm import load_base_model
    from llmops_dagster.search.retriever import HybridRetriever
    from llmops_dagster.train.dataset import build_sft_dataset, retriever_context_fn

    settings = llmops.settings()
    retriever = HybridRetriever(elasticsearch.get_client(), elasticsearch.alias, llmops.embedder())
    tokenizer = load_base_model(settings).tokenizer
    dataset = build_sft_dataset(
        settings.train_qa_path,
        tokenizer=tokenizer,
        context_fn=retriever_context_fn(retriever, k=config.context_k),
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    path = settings.llmops_home / "datasets" / f"sft-{dataset.digest[:12]}.jsonl"
    dataset.write_jsonl(path)
    summary = dataset.summary()
    lineage = track(
        context,
        mlflow,
        params={k: v for k, v in summary.items() if k != "digest"},
        metrics={"n_train": summary["n_train"], "n_validation": summary["n_validation"]},
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
            "path": str(path),
            "preview": md(preview, ["prompt", "completion"]),
        },
    )


@dg.asset(group_name="model", kinds={"pytorch", "mlflow"}, owners=["team:ml-platform"])
def lora_adapter(
    context: dg.AssetExecutionContext,
    config: LoraTrainingConfig,
    finetune_dataset,
    llmops: LlmopsSettingsResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """A LoRA adapter (peft) on the generator, trained with transformers' Trainer, logged and
    registered as a new model version. It does not move `champion`: the evaluation gate does."""
    from llmops_dagster.search.aliases import current_index
    from llmops_dagster.train.lora import train_lora

    settings = llmops.settings()
    mlflow.store()  # fail fast, naming MLFLOW_TRACKING_URI, before minutes of training
    index_version = current_index(elasticsearch.get_client(), elasticsearch.alias)
    lineage_tags = {
        TAG_DAGSTER_RUN: context.run_id,
        TAG_ASSET_KEY: context.asset_key.to_user_string(),
        TAG_CODE_VERSION: code_version(),
        **{f"upstream.{k}": v for k, v in upstream_mlflow_runs(context).items()},
    }
    result = train_lora(
        mlflow.apply_to(settings),
        finetune_dataset,
        r=config.r,
        alpha=config.alpha,
        dropout=config.dropout,
        target_modules=tuple(config.target_modules),
        max_steps=config.max_steps or settings.lora_max_steps,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        max_seq_len=config.max_seq_len,
        index_version=index_version,
        registered_model_name=settings.lora_model_name,
        extra_tags=lineage_tags,
    )
    context.log.info(
        f"registered {result.registered_model_name} v{result.model_version} "
        f"(eval loss {result.eval_loss_before} → {result.eval_loss_after})"
    )
    url = mlflow.settings().mlflow_ui_url.rstrip("/")
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": result.run_id,
            "mlflow_run": dg.MetadataValue.url(
                f"{url}/#/experiments/{result.experiment_id}/runs/{result.run_id}"
            ),
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
