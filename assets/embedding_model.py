"""The embedding fine-tuning asset: the configured embedding model trained on inverse-cloze
pairs drawn from the indexed corpus (no labelled queries), registered in the MLflow registry.

Group ``model``, beside the LoRA adapter: it is training, and the ``index`` group is what the
hourly reindex job selects (a fine-tuning there would run every hour). It is also left out of
``whole_graph`` (the demo's run) and has its own job, ``finetune_embedding``: the new model only
matters once a shadow index is built with it and evaluated.
"""

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
)


class EmbeddingFinetuneConfig(dg.Config):
    max_steps: int | None = Field(default=None, ge=1)
    """Optimizer steps (default: the models resource's embedding_ft_max_steps,
    LLMOPS_EMBEDDING_FT_MAX_STEPS)."""
    batch_size: int = Field(default=16, ge=2)
    """Pairs per step; the other pairs' positives in a batch are each anchor's in-batch
    negatives."""
    learning_rate: float = Field(default=3e-5, gt=0)
    hard_negative: bool = False
    """Also train against a BM25 hard negative per pair, searched in the live index as the
    training audience (off: no search runs; see EmbedRecipe.hard_negative for why it is off)."""
    max_pairs: int | None = Field(default=None, ge=1)
    """At most this many pairs, a seeded sample spread over documents (None: one per chunk
    the training audience may read)."""
    seed: int = 13
    """Seed of the pairs (sentence held out per chunk, sample, kept-sentence share) and of the
    training."""
    shuffled_pairs: bool = False
    """Pair each query with another query's positive: a model made worse on purpose (tests of
    the evaluation that must refuse it). Never for a real candidate."""


@dg.asset(
    deps=["search_index"],
    group_name="model",
    kinds={"pytorch", "mlflow"},
    owners=["team:ml-platform"],
    # One at a time with evaluations, so that it may train on every core.
    pool=EVALUATION_POOL,
)
def embedding_finetune(
    context: dg.AssetExecutionContext,
    config: EmbeddingFinetuneConfig,
    datasets: DatasetsResource,
    models: ModelsResource,
    elasticsearch: ElasticsearchResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.Output:
    """The embedding model (LLMOPS_EMBEDDING_MODEL) fine-tuned with sentence-transformers'
    trainer and MultipleNegativesRankingLoss on inverse-cloze pairs from the active chunks the
    training audience (LLMOPS_TRAIN_GROUPS, default public) may read: a sentence of a chunk as
    the query, the chunk without it as the positive, the other positives of a batch as the
    negatives, and with `hard_negative` also the best BM25 hit of another document (searched
    in the live index as that audience; without it no search runs); queries restating a
    golden item are dropped (`n_dropped_golden`). Saved under the models cache
    (`embedding/<base>-ft-<digest8>`; the same data and recipe reuse the folder and its
    registered version) and registered under LLMOPS_EMBEDDING_FT_MODEL_NAME with its data
    digest, recipe and base model. Outputs a `FinetunedEmbedding` for the shadow index."""
    from pathlib import Path

    from llmops_dagster.access import AccessError, Principal
    from llmops_dagster.embed.finetune import (
        EmbedFinetuneError,
        EmbedRecipe,
        FinetunedEmbedding,
        find_registered_version,
        finetune_embedder,
        register_embedding,
    )
    from llmops_dagster.embed.finetune_pairs import PairsError, build_pairs, sample_records
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.models.threads import torch_threads
    from llmops_dagster.search.retriever import HybridRetriever, SearchMode
    from llmops_dagster.train.raft import read_chunk_records

    try:
        training = Principal("training", frozenset(datasets.train_groups))
    except AccessError as exc:
        raise dg.Failure(f"datasets resource train_groups (LLMOPS_TRAIN_GROUPS): {exc}") from exc
    recipe = EmbedRecipe(
        max_steps=config.max_steps or models.embedding_ft_max_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        hard_negative=config.hard_negative,
        seed=config.seed,
    )
    try:
        recipe.validate()
    except EmbedFinetuneError as exc:
        raise dg.Failure(f"embedding_finetune config: {exc}") from exc
    golden = load_golden(datasets.golden_path)
    with warehouse.get_connection() as con:
        chunks = read_chunk_records(con)
    if not any(training.can_read(c.audience) for c in chunks):
        raise dg.Failure(
            f"the warehouse ({warehouse.location}) holds no active chunk the training audience "
            f"{training.visible_groups} may read: materialize chunks and search_index first"
        )
    retriever = HybridRetriever(elasticsearch.get_client(), elasticsearch.alias)

    def bm25(query: str, k: int) -> list[tuple[str, str, str]]:
        # The audience filter runs inside Elasticsearch (as for every search of the project).
        hits = retriever.search(query, mode=SearchMode.BM25, k=k, principal=training)
        return [(h.chunk_id, h.doc_id, h.text) for h in hits]

    try:
        report = build_pairs(
            chunks,
            bm25,
            negatives=recipe.hard_negative,
            reader=training,
            golden=golden.items,
            max_pairs=config.max_pairs,
            seed=config.seed,
            shuffled=config.shuffled_pairs,
        )
    except PairsError as exc:
        raise dg.Failure(f"embedding_finetune pairs: {exc}") from exc
    if not report.pairs:
        raise dg.Failure(
            f"no training pairs from {report.chunks_seen} chunks ({report.counts()}): "
            "nothing to fine-tune on"
        )
    digest = report.digest()
    context.log.info(
        f"{len(report.pairs)} ICT pairs{' with BM25 negatives' if report.negatives else ''} "
        f"from {report.chunks_seen} chunks "
        f"({report.dropped_audience} outside the audience, {report.dropped_golden} sentences "
        f"dropped for restating a golden item; {report.rule.describe()})"
    )
    mlflow.store()  # fail fast, naming the tracking URI, before minutes of training

    def progress(step: int, total: int, loss: float) -> None:
        if step == 1 or step == total or step % 5 == 0:
            context.log.info(f"step {step}/{total}: loss {loss:.4f}")

    name = models.embedding_ft_model_name
    with mlflow.asset_run(context, tags={"data.digest": digest}) as run:
        try:
            # Training threads (train_torch_threads, default every core): it runs alone.
            with torch_threads(models.train_torch_threads):
                folder, stats = finetune_embedder(
                    models.embedding_model,
                    report.pairs,
                    recipe,
                    Path(models.cache_dir) / "embedding",
                    data_digest=digest,
                    progress=progress,
                    device=models.device,
                )
        except EmbedFinetuneError as exc:
            raise dg.Failure(f"embedding_finetune: {exc}") from exc
        counts = {f"n_{k}": v for k, v in report.counts().items()}
        run.log(
            params={
                **{f"recipe.{k}": v for k, v in recipe.to_dict().items()},
                "base_model_id": stats.base_model_id,
                "max_pairs": config.max_pairs,
                "shuffled_pairs": config.shuffled_pairs,
                "train_groups": ",".join(training.visible_groups),
                "golden_overlap_rule": report.rule.describe(),
            },
            metrics={
                **counts,
                "examples": stats.examples,
                "examples_seen": stats.examples_seen,
                "steps": stats.steps,
                "train_seconds": stats.seconds,
                **({"final_loss": stats.final_loss} if stats.final_loss is not None else {}),
            },
            tags={
                "data.digest": digest,
                "golden.digest": golden.version,
                "embedding.model_id": stats.model_id,
                "embedding.base_model_id": stats.base_model_id,
                "recipe": recipe.to_json(),
            },
        )
        for step, loss in enumerate(stats.losses, start=1):
            run.client.log_metric(run.run_id, "train_loss", loss, step=step)
        run.log_json(sample_records(report), "pairs_sample.json")
        existing = find_registered_version(run.client, name, stats.model_id)
        version = (
            str(existing.version)
            if stats.reused and existing is not None
            else register_embedding(
                run.client,
                name,
                folder,
                run_id=run.run_id,
                artifact_uri=run.artifact_uri,
                stats=stats,
            )
        )
        run.set_tag("model_version", version)
    context.log.info(
        f"{'reused' if stats.reused else 'trained'} {stats.model_id} ({stats.steps} steps, "
        f"{stats.seconds:.0f} s): {name} v{version}"
    )
    value = FinetunedEmbedding(
        model_id=stats.model_id,
        path=str(folder),
        base_model_id=stats.base_model_id,
        registered_name=name,
        version=version,
        data_digest=digest,
        run_id=run.run_id,
        examples=stats.examples,
        steps=stats.steps,
        seconds=stats.seconds,
    )
    preview = [
        {"query": r["query"][:100], "positive": r["positive"][:100], "negative": r["negative"][:80]}
        for r in sample_records(report, 5)
    ]
    return dg.Output(
        value=value,
        metadata={
            **mlflow.run_metadata(run),
            "model_id": stats.model_id,
            "base_model_id": stats.base_model_id,
            "path": str(folder),
            "registered_model": name,
            "model_version": version,
            "model_uri": f"models:/{name}/{version}",
            "data_digest": digest,
            "golden_digest": golden.version,
            "reused": stats.reused,
            "n_pairs": len(report.pairs),
            **{f"n_{k}": v for k, v in report.counts().items() if k != "pairs"},
            "n_chunks_dropped_audience": report.dropped_audience,
            "n_dropped_golden": report.dropped_golden,
            "shuffled_pairs": config.shuffled_pairs,
            "steps": stats.steps,
            "examples_seen": stats.examples_seen,
            "train_seconds": stats.seconds,
            "final_loss": stats.final_loss if stats.final_loss is not None else float("nan"),
            "recipe": recipe.to_dict(),
            "golden_overlap_rule": report.rule.describe(),
            "preview": md(preview, ["query", "positive", "negative"]),
        },
    )
