"""Evaluation assets: champion vs challenger on RAG bundles.

`rag_evaluation` evaluates a candidate **bundle** (generator: a LoRA adapter version, the base
model or the extractive answerer + the registered prompt version + retriever settings +
embedding model + the index it ran on) and the current champion bundle (the base model when
there is none) on the same golden cases, compares them with paired bootstrap intervals and
decides under the promotion policy. The blocking check `quality_gate` stops a refused candidate
(failed floors, too few cases, no thresholds); `champion_comparison` shows the comparison;
`champion_model` moves the `champion` or `challenger` alias of the bundle model as decided.
"""

from typing import Any

import dagster as dg
from pydantic import Field

from assets._metadata import md
from llmops_dagster.evaluate.gate import GateConfig
from llmops_dagster.evaluate.policy import DEFAULT_GUARDS, DEFAULT_MAX_ERROR_RATE
from llmops_dagster.resources import (
    CorpusResource,
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
    build_bundle_pipeline,
)

#: Every step that reads or moves the champion alias runs in this pool (limit 1 in the
#: shipped instance configs): two evaluations never decide against the same champion at once.
EVALUATION_POOL = "evaluation"

COMPARISON_COLUMNS = [
    "metric",
    "n",
    "candidate_mean",
    "baseline_mean",
    "diff",
    "ci_low",
    "ci_high",
    "candidate_errors",
    "baseline_errors",
]


class EvaluationConfig(dg.Config):
    generator: str = "llm"
    """llm (an adapter version or the base model) | extractive (no model)."""
    model_version: str | None = None
    """Adapter version of the llm candidate; "base" = the base model; default: newest."""
    golden_path: str | None = None
    """QA JSONL or BEIR folder; default: the corpus resource's golden_path."""
    limit: int | None = None
    """Evaluate only the first N golden items (below min_cases this needs allow_few_cases)."""
    k: int = 3
    """Chunks put into the prompt."""
    mode: str = "hybrid_rrf"
    metrics_depth: int = 10
    """Depth of the ranking retrieval metrics read (recall@5, nDCG@10, MRR@10)."""
    max_new_tokens: int = 32
    batch_size: int = 8
    judge: str | None = None
    """none | local | openai; default: the models resource's judge (LLMOPS_JUDGE)."""
    judge_max_cases: int = 3
    judge_capable: bool | None = None
    """Only a judge declared capable may gate (LLMOPS_JUDGE_CAPABLE); a 135M local one is not."""
    primary: str = "token_f1"
    """The metric a candidate must improve (paired bootstrap interval above -primary_margin)."""
    primary_margin: float = 0.0
    require_improvement: bool = True
    guards: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_GUARDS))
    """Metrics that may not regress by more than their margin (interval low end)."""
    minimums: dict[str, float] = Field(default_factory=lambda: dict(GateConfig().minimums))
    maximums: dict[str, float] = Field(default_factory=dict)
    min_cases: int = 30
    approval: str = "auto"
    """auto | manual (a passing candidate becomes challenger until `bundle approve`)."""
    allow_few_cases: bool = False
    """Override: gate on fewer than min_cases cases (recorded on the run and the decision)."""
    allow_no_thresholds: bool = False
    """Override: gate with no floors at all (recorded)."""
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    """Refuse when either side errored on more than this share of a compared metric's paired
    cases (an errored case scores 0: a failing baseline flatters any candidate)."""
    n_resamples: int = 2000


def _newest_adapter(client: Any, name: str) -> str:
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise dg.Failure(f"no registered version of {name}: materialize lora_adapter first")
    return str(max(int(v.version) for v in versions))


def _policy(config: EvaluationConfig, judge_capable: bool) -> Any:
    from llmops_dagster.evaluate.policy import PromotionPolicy

    return PromotionPolicy(
        primary=config.primary,
        primary_margin=config.primary_margin,
        require_improvement=config.require_improvement,
        guards=dict(config.guards),
        minimums=dict(config.minimums),
        maximums=dict(config.maximums),
        min_cases=config.min_cases,
        approval=config.approval,  # type: ignore[arg-type]
        allow_few_cases=config.allow_few_cases,
        allow_no_thresholds=config.allow_no_thresholds,
        judge_capable=judge_capable,
        max_error_rate=config.max_error_rate,
    )


def comparison_table(rows: list[dict[str, Any]]) -> dg.MarkdownMetadataValue:
    return md(rows, COMPARISON_COLUMNS)


@dg.asset(
    deps=["lora_adapter", "search_index"],
    group_name="evaluate",
    kinds={"deepeval", "mlflow"},
    owners=["team:ml-platform"],
    pool=EVALUATION_POOL,
    io_manager_key="evaluation_io_manager",
)
def rag_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    corpus: CorpusResource,
    models: ModelsResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
):
    """A candidate RAG bundle and the champion bundle (or the base model) answer the same
    golden questions on the live alias; DeepEval scores retrieval at depth (recall@5, MRR@10,
    nDCG@10) and answers (token F1, exact match, ROUGE-L, embedding similarity); the paired
    comparison and the promotion policy decide champion, challenger or refused."""
    import json
    from dataclasses import replace

    from llmops_dagster.evaluate.bundle_eval import (
        BundleEvaluation,
        compare_and_decide,
        comparison_rows,
        evaluate_pipeline,
        log_comparison,
    )
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.evaluate.judge import build_judge
    from llmops_dagster.evaluate.metrics import default_metrics
    from llmops_dagster.evaluate.tracking import log_evaluation
    from llmops_dagster.models.spec import GeneratorPin
    from llmops_dagster.rag.bundle import (
        TAG_BASELINE_VERSION,
        TAG_GENERATOR_LOCATION,
        RagBundle,
        current_champion,
        register_bundle,
    )
    from llmops_dagster.rag.extractive import ExtractiveAnswerer
    from llmops_dagster.rag.prompt_registry import sync_prompt
    from llmops_dagster.rag.prompts import load_prompt
    from llmops_dagster.search.aliases import current_index

    client = mlflow.client()
    prompt = sync_prompt(client, load_prompt())
    index_name = current_index(elasticsearch.get_client(), elasticsearch.alias)
    if index_name is None:
        raise dg.Failure(f"alias {elasticsearch.alias} has no index: materialize search_index")
    golden = load_golden(config.golden_path or corpus.golden_path)
    if config.limit:
        golden = golden.subset(config.limit)
    embedder = models.embedder()
    adapter_uri: str | None = None
    if config.generator == "llm" and config.model_version != "base":
        name = models.adapter_model_name
        version = config.model_version or _newest_adapter(client, name)
        adapter_uri = f"models:/{name}/{client.get_model_version(name, version).version}"
    # The generator as the settings make it today, pinned by value (backend, model, weights
    # digest, decoding): a changed setting is a new bundle key, evaluated before it serves.
    llm_pin = models.generator_pin()
    extractive_pin = GeneratorPin("builtin", ExtractiveAnswerer().model_id)
    base_bundle = RagBundle(
        **RagBundle.generator_fields(llm_pin),
        adapter_uri=None,
        prompt_uri=prompt.uri,
        prompt_version=prompt.content_hash,
        retrieval_mode=config.mode,
        retrieval_k=config.k,
        metrics_depth=config.metrics_depth,
        max_new_tokens=config.max_new_tokens,
        embedding_model_id=embedder.model_id,
        index_name=str(index_name),
        index_alias=elasticsearch.alias,
    )
    candidate_bundle = replace(
        base_bundle,
        **RagBundle.generator_fields(
            extractive_pin if config.generator == "extractive" else llm_pin
        ),
        adapter_uri=adapter_uri,
    )
    # Read once: the decision records the champion it was compared with, and promotion moves
    # the alias only if that is still the champion (compare-and-set).
    champion = current_champion(client)
    baseline_tags: dict[str, str] = {}
    if champion is not None:
        # The champion answers with its own pinned settings, on today's index and golden set.
        baseline_bundle = replace(champion.bundle, index_name=str(index_name))
        baseline_label = f"champion {champion.uri}"
        baseline_tags = champion.tags
    else:
        baseline_bundle, baseline_label = base_bundle, "base model (no champion yet)"
    baseline_version = champion.version if champion is not None else None

    judge_spec = models.judge_spec()
    if config.judge is not None:
        judge_spec = replace(judge_spec, kind=config.judge)  # type: ignore[arg-type]
    if config.judge_capable is not None:
        judge_spec = replace(judge_spec, capable=config.judge_capable)

    # One judge for both sides (the local one over the configured base model, never a side's
    # own adapter): scores from two different judges would not be comparable.
    judge = None
    if judge_spec.kind != "none":
        judge = build_judge(
            judge_spec, generator=models.generator() if judge_spec.kind == "local" else None
        )

    def run_bundle(
        label: str, bundle: RagBundle, recorded_tags: dict[str, str] | None = None
    ) -> BundleEvaluation:
        pipeline = build_bundle_pipeline(
            elasticsearch, models, mlflow, bundle, recorded_tags=recorded_tags
        )

        def progress(done: int, total: int) -> None:
            context.log.info(f"{label}: answered {done}/{total}")

        result = evaluate_pipeline(
            pipeline,
            golden,
            metrics=default_metrics(encoder=embedder),
            batch_size=config.batch_size,
            judge=judge,
            judge_capable=judge_spec.capable,
            judge_max_cases=config.judge_max_cases,
            progress=progress,
        )
        return BundleEvaluation(label, bundle, result)

    model_uri = candidate_bundle.adapter_uri or candidate_bundle.generator_pin.describe()
    context.log.info(
        f"candidate {candidate_bundle.describe()} vs {baseline_label} on "
        f"{len(golden.items)} golden items ({index_name})"
    )
    candidate = run_bundle("candidate", candidate_bundle)
    baseline = run_bundle(baseline_label, baseline_bundle, baseline_tags)
    policy = _policy(config, judge_spec.capable)
    comparisons, decision = compare_and_decide(
        candidate,
        baseline,
        policy,
        n_resamples=config.n_resamples,
        baseline_version=baseline_version,
    )
    regression = None
    if champion is not None and champion.run_id:
        regression = _champion_regression(mlflow, champion.run_id, baseline, policy, config)
        context.log.info(f"champion since promotion: {regression['summary']}")
    with mlflow.asset_run(context) as run:
        log_evaluation(
            run,
            candidate.result,
            golden,
            gate_config=policy.gate_config(),
            gate_result=decision.gate,
            context={"bundle": candidate_bundle.describe(), "index": index_name},
            tags={
                "golden.name": golden.name,
                "golden.digest": golden.version,
                "model.uri": model_uri,
                "generator.pin": candidate_bundle.generator_pin.describe(),
                TAG_BASELINE_VERSION: baseline_version or "",
                "prompt.version": prompt.uri,
                "index.name": str(index_name),
                "index.alias": elasticsearch.alias,
                **{f"decision.override.{i}": o for i, o in enumerate(decision.overrides)},
            },
        )
        log_comparison(run, baseline, comparisons, decision, policy)
        location = {}
        if candidate_bundle.generator == "llm":
            location = {TAG_GENERATOR_LOCATION: json.dumps(models.generator_location())}
        registered = register_bundle(client, candidate_bundle, run=run, extra_tags=location)
    context.log.info(decision.summary())
    rows = comparison_rows(comparisons)
    aggregates = {k: round(float(v), 4) for k, v in candidate.result.aggregates.items()}
    value = {
        "bundle_name": registered.name,
        "bundle_version": registered.version,
        "bundle_uri": registered.uri,
        "evaluation_run_id": run.run_id,
        "decision": decision,
        "baseline": baseline_label,
        "aggregates": aggregates,
        "comparison": rows,
        "champion_regression": regression,
    }
    return dg.Output(
        value,
        metadata={
            **mlflow.run_metadata(run),
            "bundle_uri": registered.uri,
            "bundle": candidate_bundle.describe(),
            "model_uri": model_uri,
            "baseline_version": baseline_version or "",
            "baseline": baseline_label,
            "golden_set": f"{golden.name}@{golden.version[:12]}",
            "cases": candidate.result.n_cases,
            "metric_errors": dg.MetadataValue.json(candidate.result.errors),
            "judge": str(candidate.result.judge or "none"),
            "decision": decision.outcome,
            "decision_summary": decision.summary(),
            "overrides": dg.MetadataValue.json(list(decision.overrides)),
            "comparison": comparison_table(rows),
            "summary": md(
                [{"metric": k, "value": v} for k, v in sorted(aggregates.items())],
                ["metric", "value"],
            ),
            **{f"metric/{k}": v for k, v in aggregates.items()},
            # None: a metric no case was scored on by both sides (n/<metric> = 0).
            **{f"diff/{r['metric']}": r["diff"] for r in rows if r["diff"] is not None},
            **{f"n/{r['metric']}": r["n"] for r in rows},
            **{f"errors/{k}": v for k, v in candidate.result.errors.items()},
            **{f"baseline_errors/{k}": v for k, v in baseline.result.errors.items()},
            **{f"judge/{k}": v for k, v in candidate.result.judge_call_counts().items()},
            **{f"baseline_judge/{k}": v for k, v in baseline.result.judge_call_counts().items()},
        },
    )


def _champion_regression(
    mlflow: MlflowResource, run_id: str, baseline: Any, policy: Any, config: EvaluationConfig
) -> dict[str, Any]:
    """The champion today vs its per-case scores recorded when it was promoted."""
    from pathlib import Path

    import mlflow as mlflow_lib

    from llmops_dagster.evaluate.bundle_eval import compared_metrics, comparison_rows
    from llmops_dagster.evaluate.tracking import TABLE_ARTIFACT
    from llmops_dagster.evaluate.triggers import champion_regression, read_table_artifact

    table = mlflow_lib.artifacts.download_artifacts(
        run_id=run_id, artifact_path=TABLE_ARTIFACT, tracking_uri=mlflow.store().tracking_uri
    )
    regressed, comparisons, reasons = champion_regression(
        baseline.result.rows,
        read_table_artifact(Path(table)),
        policy,
        metrics=compared_metrics(baseline.result, baseline.result),
        n_resamples=config.n_resamples,
    )
    return {
        "regressed": regressed,
        "reasons": reasons,
        "comparison": comparison_rows(comparisons),
        "recorded_run_id": run_id,
        "summary": "; ".join(reasons) or "holds up (no significant regression)",
    }


@dg.asset_check(asset=rag_evaluation, blocking=True, description="floors, cases, thresholds")
def quality_gate(rag_evaluation: dict) -> dg.AssetCheckResult:
    """Blocking: a refused candidate (failed floors, fewer cases than min_cases, no thresholds)
    never reaches an alias. Overrides are shown with the decision."""
    decision = rag_evaluation["decision"]
    gate = decision.gate
    return dg.AssetCheckResult(
        passed=decision.outcome != "refused",
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "bundle": rag_evaluation["bundle_uri"],
            "decision": decision.outcome,
            "summary": decision.summary(),
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
            "overrides": dg.MetadataValue.json(list(decision.overrides)),
        },
    )


@dg.asset_check(asset=rag_evaluation, description="paired comparison with the champion")
def champion_comparison(rag_evaluation: dict) -> dg.AssetCheckResult:
    """Passes when the candidate beat the champion (or the base model) under the policy; the
    table holds each metric's mean difference and paired bootstrap 95 % interval."""
    decision = rag_evaluation["decision"]
    return dg.AssetCheckResult(
        passed=decision.outcome in ("champion", "awaiting_approval"),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "baseline": rag_evaluation["baseline"],
            "decision": decision.outcome,
            "reasons": md([{"reason": r} for r in decision.reasons], ["reason"]),
            "comparison": comparison_table(rag_evaluation["comparison"]),
        },
    )


@dg.asset(
    group_name="evaluate", kinds={"mlflow"}, owners=["team:ml-platform"], pool=EVALUATION_POOL
)
def champion_model(
    context: dg.AssetExecutionContext, rag_evaluation: dict, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """Moves the bundle model's aliases as decided: `champion` for a candidate that beat the
    champion, `challenger` otherwise (and for one awaiting manual approval). Runs only when the
    blocking quality gate passed; promotions record the previous champion for rollback.

    Compare-and-set: `champion` moves only while the champion the candidate was compared with
    still holds it. Otherwise (another evaluation promoted in between, or this output is an old
    one materialized again) nothing moves, the version is tagged `stale` and the step fails
    asking for a re-evaluation (the `stale_decision_sensor` requests it)."""
    from llmops_dagster.evaluate.triggers import rerun_config
    from llmops_dagster.rag.bundle import (
        CHAMPION,
        StaleDecisionError,
        current_alias_version,
        load_bundle,
        promote_decided,
    )

    decision = rag_evaluation["decision"]
    name, version = rag_evaluation["bundle_name"], rag_evaluation["bundle_version"]
    client = mlflow.client()
    try:
        move = promote_decided(
            client,
            name,
            version,
            outcome=decision.outcome,
            baseline_version=decision.baseline_version,
            evaluation_run_id=rag_evaluation["evaluation_run_id"],
            decision_summary=decision.summary(),
        )
    except StaleDecisionError as exc:
        bundle = load_bundle(client, rag_evaluation["bundle_uri"]).bundle
        raise dg.Failure(
            description=str(exc),
            metadata={
                "version": version,
                "compared_with": decision.baseline_version or "base model",
                "champion_now": current_alias_version(client, name, CHAMPION) or "",
                "reevaluate_config": dg.MetadataValue.json(rerun_config(bundle)),
            },
        ) from exc
    context.log.info(f"{rag_evaluation['bundle_uri']} → @{move.alias}: {decision.summary()}")
    return dg.MaterializeResult(
        metadata={
            "promoted": move.alias == CHAMPION,
            "alias": move.alias,
            "decision": decision.outcome,
            "champion": f"models:/{name}@{CHAMPION}",
            "version": version,
            "compared_with": decision.baseline_version or "",
            "previous_version": str(move.previous_version or ""),
            "reason": decision.summary(),
            "mlflow_run_id": rag_evaluation["evaluation_run_id"],
        }
    )


@dg.asset_check(asset=rag_evaluation, description="the champion still holds up")
def champion_holds_up(rag_evaluation: dict) -> dg.AssetCheckResult:
    """Fails when the champion, answering today (e.g. after a reindex), is significantly worse
    than when it was promoted, on the same questions; the comparison is attached."""
    regression = rag_evaluation["champion_regression"]
    if regression is None:
        return dg.AssetCheckResult(passed=True, metadata={"compared": "no champion yet"})
    return dg.AssetCheckResult(
        passed=not regression["regressed"],
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "summary": regression["summary"],
            "recorded_run_id": regression["recorded_run_id"],
            "comparison": comparison_table(regression["comparison"]),
        },
    )


EVALUATION_CHECKS = [quality_gate, champion_comparison, champion_holds_up]
