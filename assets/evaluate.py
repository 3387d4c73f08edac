"""Evaluation assets: DeepEval on the golden set, a blocking quality gate, champion promotion.

`rag_evaluation` scores a candidate adapter version against the live index alias. Its blocking
check `quality_gate` fails when a gated metric misses its threshold; `champion_model` is
downstream of that check, so a failing candidate never reaches the `champion` alias.
"""

from dataclasses import replace
from typing import Any

import dagster as dg
from pydantic import Field

from assets._lineage import upstream_mlflow_runs
from assets._metadata import md
from llmops_dagster.resources import ElasticsearchResource, LlmopsSettingsResource, MlflowResource
from llmops_dagster.tracking.lineage import (
    TAG_ASSET_KEY,
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN,
    code_version,
    run_url,
)


class EvaluationConfig(dg.Config):
    model_version: str | None = None
    """Candidate adapter version; default: the newest registered version."""
    golden_path: str | None = None
    """QA JSONL or BEIR folder; default: data/golden/qa.jsonl."""
    limit: int | None = None
    """Evaluate only the first N golden items (smoke runs)."""
    k: int = 3
    mode: str = "hybrid_rrf"
    max_new_tokens: int = 32
    batch_size: int = 8
    judge: str | None = None
    """none | local | openai; default LLMOPS_JUDGE (none). openai reads LLMOPS_JUDGE_BASE_URL,
    LLMOPS_JUDGE_MODEL and the key from the env variable LLMOPS_JUDGE_API_KEY_ENV names."""
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
    llmops: LlmopsSettingsResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
):
    """The candidate adapter answers every golden question through the live alias; DeepEval
    scores retrieval (recall@k, MRR, nDCG@k), answers (token F1, exact match, ROUGE-L,
    embedding similarity) and, with a judge configured, relevancy/faithfulness/correctness."""
    from mlflow.tracking import MlflowClient

    from llmops_dagster.evaluate.gate import GateConfig, evaluate_gate
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.evaluate.judge import JudgeConfig, build_judge
    from llmops_dagster.evaluate.metrics import default_metrics
    from llmops_dagster.evaluate.run import build_cases, evaluate_rag
    from llmops_dagster.evaluate.tracking import log_evaluation
    from llmops_dagster.rag.answer import answer_many
    from llmops_dagster.rag.llm import load_generator
    from llmops_dagster.rag.prompts import load_prompt
    from llmops_dagster.search.aliases import current_index
    from llmops_dagster.search.retriever import HybridRetriever

    settings = mlflow.apply_to(llmops.settings())
    store = mlflow.store()
    client = MlflowClient(store.tracking_uri)
    name = settings.lora_model_name
    version = _candidate_version(client, name, config.model_version)
    model_uri = f"models:/{name}/{version}"
    golden = load_golden(config.golden_path) if config.golden_path else load_golden()
    if config.limit:
        golden = golden.subset(config.limit)
    es = elasticsearch.get_client()
    index_name = current_index(es, elasticsearch.alias)
    embedder = llmops.embedder()
    retriever = HybridRetriever(es, elasticsearch.alias, embedder)
    generator = load_generator(settings, adapter_uri=model_uri)
    prompt = load_prompt()
    context.log.info(f"evaluating {model_uri} on {len(golden.items)} golden items ({index_name})")

    def answer_batch(questions):
        done = answer_many(
            questions,
            retriever=retriever,
            generator=generator,
            prompt=prompt,
            k=config.k,
            mode=config.mode,
            max_new_tokens=config.max_new_tokens,
        )
        context.log.info(f"answered {len(done)} questions")
        return done

    cases = build_cases(golden, answer_batch, batch_size=config.batch_size)
    judge_config = JudgeConfig.from_env()
    if config.judge is not None:
        judge_config = replace(judge_config, kind=config.judge)
    if config.judge_capable is not None:
        judge_config = replace(judge_config, capable=config.judge_capable)
    judge = build_judge(judge_config, generator=generator)
    result = evaluate_rag(
        cases,
        metrics=default_metrics(encoder=embedder),
        judge=judge,
        judge_capable=judge_config.capable,
        judge_max_cases=config.judge_max_cases,
    )
    gate_config = GateConfig(
        minimums=config.minimums, maximums=config.maximums, judge_capable=judge_config.capable
    )
    gate = evaluate_gate(result.aggregates, gate_config)
    lineage_tags = {
        TAG_DAGSTER_RUN: context.run_id,
        TAG_ASSET_KEY: context.asset_key.to_user_string(),
        TAG_CODE_VERSION: code_version(),
        **{f"upstream.{k}": v for k, v in upstream_mlflow_runs(context).items()},
        "golden.name": golden.name,
        "golden.digest": golden.version,
        "model.uri": model_uri,
        "prompt.version": f"{prompt.name}@{prompt.version}",
        "index.name": str(index_name),
        "index.alias": elasticsearch.alias,
    }
    run_id = log_evaluation(
        settings,
        result,
        golden,
        gate_config=gate_config,
        gate_result=gate,
        context={"model_uri": model_uri, "index": index_name, "mode": config.mode, "k": config.k},
        tags=lineage_tags,
    )
    context.log.info(gate.summary())
    aggregates = {k: round(float(v), 4) for k, v in result.aggregates.items()}
    value = {
        "model_name": name,
        "model_version": version,
        "evaluation_run_id": run_id,
        "gate": gate,
        "aggregates": aggregates,
    }
    return dg.Output(
        value,
        metadata={
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(
                run_url(settings.mlflow_ui_url, store.experiment_id, run_id)
            ),
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
    from mlflow.tracking import MlflowClient

    from llmops_dagster.evaluate.gate import promote_champion

    client = MlflowClient(mlflow.store().tracking_uri)
    promotion = promote_champion(
        client,
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
