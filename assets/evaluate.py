"""Evaluation assets: DeepEval on the golden set, a blocking quality gate, champion promotion.

`rag_evaluation` scores a candidate adapter version against the live index alias. Its blocking
check `quality_gate` fails when a gated metric misses its threshold; `champion_model` is
downstream of that check, so a failing candidate never reaches the `champion` alias.
"""

from dataclasses import replace
from typing import Any

import dagster as dg
from pydantic import Field

from assets._metadata import md
from llmops_dagster.resources import (
    CorpusResource,
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
    build_rag_pipeline,
)


class EvaluationConfig(dg.Config):
    model_version: str | None = None
    """Candidate adapter version; default: the newest registered version."""
    golden_path: str | None = None
    """QA JSONL or BEIR folder; default: the corpus resource's golden_path."""
    limit: int | None = None
    """Evaluate only the first N golden items (smoke runs)."""
    k: int = 3
    mode: str = "hybrid_rrf"
    max_new_tokens: int = 32
    batch_size: int = 8
    judge: str | None = None
    """none | local | openai; default: the models resource's judge (LLMOPS_JUDGE)."""
    judge_max_cases: int = 3
    judge_capable: bool | None = None
    """Only a judge declared capable may gate (LLMOPS_JUDGE_CAPABLE); a 135M local one is not."""
    minimums: dict[str, float] = Field(
        default_factory=lambda: {"recall_at_5": 0.6, "ndcg_at_10": 0.5, "token_f1": 0.05}
    )
    maximums: dict[str, float] = Field(default_factory=dict)


def _candidate_version(client: Any, name: str, requested: str | None) -> str:
    if requested:
        return str(client.get_model_version(name, requested).version)
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise dg.Failure(f"no registered version of {name}: materialize lora_adapter first")
    return str(max(int(v.version) for v in versions))


@dg.asset(
    deps=["lora_adapter", "search_index"],
    group_name="evaluate",
    kinds={"deepeval", "mlflow"},
    owners=["team:ml-platform"],
)
def rag_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    corpus: CorpusResource,
    models: ModelsResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
):
    """The candidate adapter answers every golden question through the RAG pipeline on the
    live alias; DeepEval scores retrieval (recall@k, MRR, nDCG@k), answers (token F1, exact
    match, ROUGE-L, embedding similarity) and, with a judge configured, relevancy /
    faithfulness / correctness."""
    from llmops_dagster.evaluate.gate import GateConfig, evaluate_gate
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.evaluate.judge import build_judge
    from llmops_dagster.evaluate.metrics import default_metrics
    from llmops_dagster.evaluate.run import build_cases, evaluate_rag
    from llmops_dagster.evaluate.tracking import log_evaluation
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.search.aliases import current_index

    name = models.adapter_model_name
    version = _candidate_version(mlflow.client(), name, config.model_version)
    model_uri = f"models:/{name}/{version}"
    golden = load_golden(config.golden_path or corpus.golden_path)
    if config.limit:
        golden = golden.subset(config.limit)
    index_name = current_index(elasticsearch.get_client(), elasticsearch.alias)
    pipeline = build_rag_pipeline(
        elasticsearch,
        models,
        mlflow,
        adapter_uri=model_uri,
        retrieval=RetrievalSettings(mode=config.mode, k=config.k),
        max_new_tokens=config.max_new_tokens,
    )
    context.log.info(f"evaluating {model_uri} on {len(golden.items)} golden items ({index_name})")

    def answer_batch(questions):
        done = pipeline.answer_many(questions)
        context.log.info(f"answered {len(done)} questions")
        return done

    cases = build_cases(golden, answer_batch, batch_size=config.batch_size)
    judge_spec = models.judge_spec()
    if config.judge is not None:
        judge_spec = replace(judge_spec, kind=config.judge)  # type: ignore[arg-type]
    if config.judge_capable is not None:
        judge_spec = replace(judge_spec, capable=config.judge_capable)
    judge = build_judge(judge_spec, generator=pipeline.generator)
    result = evaluate_rag(
        cases,
        metrics=default_metrics(encoder=models.embedder()),
        judge=judge,
        judge_capable=judge_spec.capable,
        judge_max_cases=config.judge_max_cases,
    )
    gate_config = GateConfig(
        minimums=config.minimums, maximums=config.maximums, judge_capable=judge_spec.capable
    )
    gate = evaluate_gate(result.aggregates, gate_config)
    with mlflow.asset_run(context) as run:
        log_evaluation(
            run,
            result,
            golden,
            gate_config=gate_config,
            gate_result=gate,
            context={
                "model_uri": model_uri,
                "index": index_name,
                "mode": config.mode,
                "k": config.k,
            },
            tags={
                "golden.name": golden.name,
                "golden.digest": golden.version,
                "model.uri": model_uri,
                "prompt.version": pipeline.prompt_ref,
                "index.name": str(index_name),
                "index.alias": elasticsearch.alias,
            },
        )
    context.log.info(gate.summary())
    aggregates = {k: round(float(v), 4) for k, v in result.aggregates.items()}
    value = {
        "model_name": name,
        "model_version": version,
        "evaluation_run_id": run.run_id,
        "gate": gate,
        "aggregates": aggregates,
    }
    return dg.Output(
        value,
        metadata={
            **mlflow.run_metadata(run),
            "model_uri": model_uri,
            "golden_set": f"{golden.name}@{golden.version[:12]}",
            "cases": len(result.rows),
            "judge": str(result.judge or "none"),
            "judge_gates": result.judge_gates,
            "gate_passed": gate.passed,
            "gate": gate.summary(),
            "summary": md(
                [{"metric": k, "value": v} for k, v in sorted(aggregates.items())],
                ["metric", "value"],
            ),
            **{f"metric/{k}": v for k, v in aggregates.items()},
        },
    )


@dg.asset_check(asset=rag_evaluation, blocking=True, description="golden-set quality gate")
def quality_gate(rag_evaluation: dict) -> dg.AssetCheckResult:
    """Blocking: a gated metric below its threshold stops promotion, naming the shortfall."""
    gate = rag_evaluation["gate"]
    return dg.AssetCheckResult(
        passed=gate.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "model_version": rag_evaluation["model_version"],
            "summary": gate.summary(),
            "failures": md(
                [
                    {
                        "metric": f.metric,
                        "value": f.value,
                        "threshold": f"{f.direction} {f.threshold}",
                        "shortfall": round(f.shortfall, 4),
                    }
                    for f in gate.failures
                ],
                ["metric", "value", "threshold", "shortfall"],
            ),
            "checked": ", ".join(gate.checked),
        },
    )


@dg.asset(group_name="evaluate", kinds={"mlflow"}, owners=["team:ml-platform"])
def champion_model(
    context: dg.AssetExecutionContext, rag_evaluation: dict, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """Points the registry alias `champion` at the evaluated version (runs only when the
    blocking quality gate passed); the previous champion is recorded in tags for rollback."""
    from llmops_dagster.evaluate.gate import promote_champion

    promotion = promote_champion(
        mlflow.client(),
        rag_evaluation["model_name"],
        rag_evaluation["model_version"],
        rag_evaluation["gate"],
        evaluation_run_id=rag_evaluation["evaluation_run_id"],
    )
    context.log.info(promotion.reason)
    return dg.MaterializeResult(
        metadata={
            "promoted": promotion.promoted,
            "champion": f"models:/{promotion.model_name}@{promotion.alias}",
            "version": promotion.version,
            "previous_version": str(promotion.previous_version),
            "reason": promotion.reason,
            "mlflow_run_id": rag_evaluation["evaluation_run_id"],
        }
    )


EVALUATION_CHECKS = [quality_gate]
