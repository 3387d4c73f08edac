"""Evaluation assets: champion vs challenger on RAG bundles.

`rag_evaluation` evaluates a candidate **bundle** (generator: a LoRA adapter version, the base
model or the extractive answerer + the registered prompt version + retriever settings +
embedding model + the index it ran on) and the current champion bundle (the base model when
there is none) on the same golden cases, compares them with paired bootstrap intervals and
decides under the promotion policy. The blocking check `quality_gate` stops a refused candidate
(failed floors, too few cases, no thresholds); `champion_comparison` shows the comparison;
`champion_model` moves the `champion` or `challenger` alias of the bundle model as decided.
"""

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from assets._metadata import md
from llmops_dagster.evaluate.policy import PromotionPolicy
from llmops_dagster.rag.defaults import DEFAULT_K, DEFAULT_MODE, EVALUATION_MAX_NEW_TOKENS
from llmops_dagster.resources import (
    DatasetsResource,
    ElasticsearchResource,
    MlflowResource,
    ModelsResource,
    build_bundle_pipeline,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmops_dagster.evaluate.candidate import CandidateEvaluation
    from llmops_dagster.rag.bundle import BundleVersion, RagBundle
    from llmops_dagster.rag.pipeline import RagPipeline

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


#: The promotion policy's defaults: the policy fields of `EvaluationConfig` default to them.
_POLICY = PromotionPolicy()


class EvaluationConfig(dg.Config):
    """Run config of `rag_evaluation`, flat (the keys sensors, the demo and users send): the
    candidate (`evaluate.candidate.CandidateRequest`), how the run scores it, and the promotion
    policy — every field named like a `PromotionPolicy` field is the policy's
    (`PromotionPolicy.from_run_config` maps them by name and validates them), with its default;
    `tests/unit/test_eval_candidate.py` fails when the two drift apart."""

    # --- the candidate ---------------------------------------------------------------------
    generator: str = "llm"
    """llm (an adapter version or the base model) | extractive (no model)."""
    model_version: str | None = None
    """Adapter version of the llm candidate; "base" = the base model; default: newest."""
    k: int = DEFAULT_K
    """Chunks put into the prompt (the base bundle's, `rag/defaults.py`)."""
    mode: str = DEFAULT_MODE
    """One of the retriever's search modes (bm25, knn, hybrid_rrf, hybrid_linear, server_rrf)."""
    metrics_depth: int = 10
    """Depth of the ranking retrieval metrics read (recall@5, nDCG@10, MRR@10)."""
    max_new_tokens: int = EVALUATION_MAX_NEW_TOKENS
    """Answer budget of both sides (shorter than the base bundle's: see `rag/defaults.py`)."""
    index: str = "live"
    """live | shadow (the newest shadow index: a fine-tuned embedding model's) | a physical
    index of the alias. Not live: the candidate is the champion's bundle on that index and its
    model, the baseline the champion on the live index."""
    # --- the run ---------------------------------------------------------------------------
    golden_path: str | None = None
    """QA JSONL or BEIR folder; default: the datasets resource's golden_path."""
    limit: int | None = None
    """Evaluate only the first N golden items (below min_cases this needs allow_few_cases)."""
    batch_size: int = Field(default=32, ge=1)
    """Golden questions retrieved and answered per call (one principal's). The local generator
    orders a call's prompts by length into batches of its own size (8): more per call, less
    padding. In float32 the answers and scores do not depend on it (in bfloat16 a batch's
    rows can change each other's greedy answers: LLMOPS_GENERATOR_PRECISION)."""
    judge: str | None = None
    """none | local | openai; default: the models resource's judge (LLMOPS_JUDGE)."""
    judge_max_cases: int | None = None
    """Cases the judge scores; unset: every case for a capable judge (it may gate), the first 3
    for a weak one (it only reports). See `evaluate.run.judge_case_limit`."""
    judge_capable: bool | None = None
    """Only a judge declared capable may gate (LLMOPS_JUDGE_CAPABLE); a 135M local one is not."""
    n_resamples: int = 2000
    reuse_answers: bool = True
    """Score a side on the answers recorded by an earlier evaluation of the same bundle, golden
    set, index version and answer-path code instead of answering again (`evaluate/answer_reuse.py`);
    false: both sides answer (and are recorded)."""
    # --- the promotion policy (evaluate.policy.PromotionPolicy: same names, same defaults) -
    primary: str = _POLICY.primary
    """The metric a candidate must improve (paired bootstrap interval above -primary_margin)."""
    primary_margin: float = _POLICY.primary_margin
    require_improvement: bool = _POLICY.require_improvement
    guards: dict[str, float] = Field(default_factory=lambda: dict(_POLICY.guards))
    """Metrics that may not regress by more than their margin (interval low end)."""
    minimums: dict[str, float] = Field(default_factory=lambda: dict(_POLICY.minimums))
    maximums: dict[str, float] = Field(default_factory=lambda: dict(_POLICY.maximums))
    min_cases: int = _POLICY.min_cases
    approval: str = _POLICY.approval
    """auto | manual (a passing candidate becomes challenger until `bundle approve`)."""
    allow_few_cases: bool = _POLICY.allow_few_cases
    """Override: gate on fewer than min_cases cases (recorded on the run and the decision)."""
    allow_no_thresholds: bool = _POLICY.allow_no_thresholds
    """Override: gate with no floors at all (recorded)."""
    max_error_rate: float = _POLICY.max_error_rate
    """Refuse when either side errored on more than this share of a compared metric's paired
    cases (an errored case scores 0: a failing baseline flatters any candidate)."""
    max_cost_ratio: float | None = _POLICY.max_cost_ratio
    """Hold a candidate back (challenger) whose mean prompt + completion tokens per answer
    exceed this multiple of the baseline's; null: no cost rule."""
    min_online_answers: int = _POLICY.min_online_answers
    """0: off. Else a candidate that would be promoted becomes challenger (awaiting_online)
    until serving_metrics has seen this many served answers per arm non-inferior online."""
    online_margins: dict[str, float] = Field(default_factory=lambda: dict(_POLICY.online_margins))
    """Online metric → allowed regression of challenger vs champion (interval end), over what
    `serving/arm_comparison.py` computes (cited, thumbs_down, latency_ms, tokens)."""


def comparison_table(rows: list[dict[str, Any]]) -> dg.MarkdownMetadataValue:
    return md(rows, COMPARISON_COLUMNS)


def comparison_numbers(rows: list[dict[str, Any]]) -> dict[str, float | int]:
    """The paired comparison as numbers the UI plots over runs: per metric ``diff/<metric>``,
    ``ci_low/<metric>``, ``ci_high/<metric>`` (floats) and ``n/<metric>`` (paired cases). A
    metric compared on no case (n = 0) has no difference or interval, so no float keys."""
    numbers: dict[str, float | int] = {}
    for row in rows:
        metric = row["metric"]
        numbers[f"n/{metric}"] = int(row["n"])
        for column in ("diff", "ci_low", "ci_high"):
            if row[column] is not None:
                numbers[f"{column}/{metric}"] = float(row[column])
    return numbers


def evaluation_pipeline_for(
    elasticsearch: ElasticsearchResource, models: ModelsResource, mlflow: MlflowResource
) -> "Callable[[RagBundle, Mapping[str, str]], RagPipeline]":
    """How the evaluation builds a side's pipeline: exactly as its bundle pins it, with the
    models' evaluation threads (`ModelsResource.for_evaluation`): evaluations run one at a
    time (the evaluation pool), so the one running may use every core; serving keeps
    `torch_threads`."""
    eval_models = models.for_evaluation()
    # Each side searches the physical index its bundle names (a shadow index is no alias's),
    # with queries embedded by that index's model.
    return lambda bundle, tags: build_bundle_pipeline(
        elasticsearch, eval_models, mlflow, bundle, recorded_tags=tags, on_bundle_index=True
    )


@dg.asset(
    # shadow_index: an index candidate (`index: shadow`) is evaluated after its shadow is built
    # (the finetune_embedding job); jobs without it evaluate the live index.
    deps=["lora_adapter", "search_index", "shadow_index"],
    group_name="evaluate",
    kinds={"deepeval", "mlflow"},
    owners=["team:ml-platform"],
    pool=EVALUATION_POOL,
    io_manager_key="evaluation_io_manager",
)
def rag_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    datasets: DatasetsResource,
    models: ModelsResource,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
):
    """A candidate RAG bundle and the champion bundle (or the base model) answer the same
    golden questions on the live alias; DeepEval scores retrieval at depth (recall@5, MRR@10,
    nDCG@10) and answers (token F1, exact match, ROUGE-L, embedding similarity); the paired
    comparison and the promotion policy decide champion, challenger or refused."""
    from llmops_dagster.evaluate.answer_reuse import AnswerReuse
    from llmops_dagster.evaluate.candidate import (
        CandidateError,
        CandidateRequest,
        evaluate_candidate,
        judge_spec_for_run,
        record_evaluation,
        recorded_cases,
        resolve_candidate_index,
        resolve_sides,
    )
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.evaluate.judge import build_judge
    from llmops_dagster.evaluate.metrics import default_metrics
    from llmops_dagster.evaluate.run import judge_case_limit
    from llmops_dagster.rag.prompt_registry import sync_prompt
    from llmops_dagster.rag.prompts import load_prompt
    from llmops_dagster.search.aliases import current_index
    from llmops_dagster.search.sync import live_model_id

    client = mlflow.client()
    es_client = elasticsearch.get_client()
    prompt = sync_prompt(client, load_prompt())
    embedder = models.embedder()
    golden = load_golden(config.golden_path or datasets.golden_path)
    if config.limit:
        golden = golden.subset(config.limit)
    run_config = config.model_dump()
    try:
        candidate_index = resolve_candidate_index(es_client, elasticsearch.alias, config.index)
        sides = resolve_sides(
            client,
            CandidateRequest.from_config(run_config),
            llm_pin=models.generator_pin(),
            prompt_uri=prompt.uri,
            prompt_version=prompt.content_hash,
            # The live index's model (a promoted fine-tuned one), which embeds its queries.
            embedding_model_id=live_model_id(es_client, elasticsearch.alias) or embedder.model_id,
            index_name=current_index(es_client, elasticsearch.alias),
            index_alias=elasticsearch.alias,
            adapter_model_name=models.adapter_model_name,
            candidate_index=candidate_index,
        )
        judge_spec = judge_spec_for_run(
            models.judge_spec(), kind=config.judge, capable=config.judge_capable
        )
        policy = PromotionPolicy.from_run_config(run_config, judge_capable=judge_spec.capable)
        if candidate_index is not None and policy.min_online_answers > 0:
            # Served requests follow the alias: a challenger on a shadow index would be served
            # on the live index, so its online answers would not be the evaluated bundle's.
            raise CandidateError(
                f"min_online_answers {policy.min_online_answers} with index "
                f"{config.index!r}: a shadow index serves no traffic before promotion, so no "
                "online evidence can be gathered for it; run the index candidate with "
                "min_online_answers 0"
            )
        judge_cases = judge_case_limit(config.judge_max_cases, capable=judge_spec.capable)
    except ValueError as exc:  # CandidateError, BundleError, a policy value: names the setting
        raise dg.Failure(str(exc)) from exc
    # One judge for both sides (the local one over the configured base model, never a side's
    # own adapter): scores from two different judges would not be comparable.
    local = models.for_evaluation().generator() if judge_spec.kind == "local" else None
    # Answers are keyed on one physical index and its version: sides on two indices (an index
    # candidate) both answer, and nothing is recorded for reuse.
    reuse = (
        AnswerReuse.on_index(
            es_client,
            sides.candidate.index_name,
            golden,
            client,
            mlflow.store().experiment_id,
            enabled=config.reuse_answers,
        )
        if sides.candidate.index_name == sides.baseline.index_name
        else None
    )
    evaluation = evaluate_candidate(
        sides,
        golden,
        pipeline_for=evaluation_pipeline_for(elasticsearch, models, mlflow),
        metrics=default_metrics(encoder=embedder),
        policy=policy,
        judge=build_judge(judge_spec, generator=local),
        judge_capable=judge_spec.capable,
        judge_max_cases=judge_cases,
        batch_size=config.batch_size,
        n_resamples=config.n_resamples,
        recorded=lambda run_id: recorded_cases(client, run_id),
        reuse=reuse,
        log=context.log.info,
    )
    with mlflow.asset_run(context) as run:
        registered = record_evaluation(
            run,
            client,
            evaluation,
            prompt_uri=prompt.uri,
            generator_location=models.generator_location(),
        )
    dropped: list[str] = []
    if candidate_index is not None and evaluation.decision.outcome == "refused":
        # A refused shadow never reaches champion_model (the blocking gate): retention is here.
        from llmops_dagster.rag.promotion import drop_refused_shadow

        dropped = drop_refused_shadow(
            es_client, client, elasticsearch.alias, sides.candidate.index_name
        )
        context.log.info(f"refused shadow index dropped: {dropped or 'none (still named)'}")
    indices = {
        "candidate_index": sides.candidate.index_name,
        "baseline_index": sides.baseline.index_name,
        "candidate_embedding_model": sides.candidate.embedding_model_id,
        "dropped_indices": dg.MetadataValue.json(dropped),
    }
    return _evaluation_output(
        evaluation, registered, run_metadata={**mlflow.run_metadata(run), **indices}
    )


def _evaluation_output(
    evaluation: "CandidateEvaluation", registered: "BundleVersion", *, run_metadata: dict[str, Any]
) -> dg.Output[dict[str, Any]]:
    """``rag_evaluation``'s value (what the checks and ``champion_model`` read) and metadata
    (numbers as numbers: aggregates, paired differences and intervals, error counts)."""
    candidate, baseline = evaluation.candidate.result, evaluation.baseline.result
    decision, sides = evaluation.decision, evaluation.sides
    rows = evaluation.comparison_rows()
    aggregates = evaluation.aggregates()
    regression = evaluation.regression
    answers = {
        key: value
        for side, found in evaluation.side_answers().items()
        for key, value in {
            f"answers_generated/{side}": found.generated,
            f"answers_reused/{side}": found.reused,
            # The run whose answers/<key>.json the side was scored on (this one: generated).
            f"answers_from/{side}": found.source_run_id or registered.run_id,
        }.items()
    }
    value = {
        "bundle_name": registered.name,
        "bundle_version": registered.version,
        "bundle_uri": registered.uri,
        "evaluation_run_id": registered.run_id,
        "decision": decision,
        "baseline": sides.baseline_label,
        "aggregates": aggregates,
        "comparison": rows,
        "champion_regression": regression.to_dict() if regression is not None else None,
    }
    return dg.Output(
        value,
        metadata={
            **run_metadata,
            "bundle_uri": registered.uri,
            "bundle": sides.candidate.describe(),
            "model_uri": sides.model_uri,
            "baseline_version": sides.baseline_version or "",
            "baseline": sides.baseline_label,
            "golden_set": f"{evaluation.golden.name}@{evaluation.golden.version[:12]}",
            "cases": candidate.n_cases,
            "metric_errors": dg.MetadataValue.json(candidate.errors),
            "judge": str(candidate.judge or "none"),
            "decision": decision.outcome,
            "decision_summary": decision.summary(),
            "overrides": dg.MetadataValue.json(list(decision.overrides)),
            "comparison": comparison_table(rows),
            "summary": md(
                [{"metric": k, "value": v} for k, v in sorted(aggregates.items())],
                ["metric", "value"],
            ),
            **{f"metric/{k}": v for k, v in aggregates.items()},
            **comparison_numbers(rows),
            **{f"errors/{k}": v for k, v in candidate.errors.items()},
            **{f"baseline_errors/{k}": v for k, v in baseline.errors.items()},
            **{f"judge/{k}": v for k, v in candidate.judge_call_counts().items()},
            **{f"baseline_judge/{k}": v for k, v in baseline.judge_call_counts().items()},
            **answers,
        },
    )


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
        passed=decision.outcome in ("champion", "awaiting_approval", "awaiting_online"),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "baseline": rag_evaluation["baseline"],
            "decision": decision.outcome,
            "reasons": md([{"reason": r} for r in decision.reasons], ["reason"]),
            "comparison": comparison_table(rag_evaluation["comparison"]),
            **comparison_numbers(rag_evaluation["comparison"]),
        },
    )


@dg.asset(
    group_name="evaluate", kinds={"mlflow"}, owners=["team:ml-platform"], pool=EVALUATION_POOL
)
def champion_model(
    context: dg.AssetExecutionContext,
    rag_evaluation: dict,
    mlflow: MlflowResource,
    elasticsearch: ElasticsearchResource,
) -> dg.MaterializeResult:
    """Moves the bundle model's aliases as decided: `champion` for a candidate that beat the
    champion, `challenger` otherwise (and for one awaiting manual approval or, under
    `min_online_answers`, online evidence: `serving_metrics` settles that). Runs only when the
    blocking quality gate passed; promotions record the previous champion for rollback.

    Compare-and-set: `champion` moves only while the champion the candidate was compared with
    still holds it. Otherwise (another evaluation promoted in between, or this output is an old
    one materialized again) nothing moves, the version is tagged `stale` and the step fails
    asking for a re-evaluation (the `stale_decision_sensor` requests it).

    A champion evaluated on a shadow index (a fine-tuned embedding model's) moves the search
    alias to that index in the same step (`rag/promotion.py`: alias first, champion second,
    the alias back if the champion cannot move); the replaced index is recorded for rollback."""
    from llmops_dagster.evaluate.triggers import rerun_config
    from llmops_dagster.rag.bundle import (
        CHAMPION,
        StaleDecisionError,
        current_alias_version,
        load_bundle,
    )
    from llmops_dagster.rag.promotion import PromotionError, promote_with_index

    decision = rag_evaluation["decision"]
    name, version = rag_evaluation["bundle_name"], rag_evaluation["bundle_version"]
    client = mlflow.client()
    try:
        promotion = promote_with_index(
            client,
            elasticsearch.get_client(),
            elasticsearch.alias,
            name,
            version,
            outcome=decision.outcome,
            baseline_version=decision.baseline_version,
            evaluation_run_id=rag_evaluation["evaluation_run_id"],
            decision_summary=decision.summary(),
            # Recorded on the version: serving_metrics settles it without this run's config.
            decision_tags=decision.online.as_tags() if decision.online is not None else None,
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
    except PromotionError as exc:
        raise dg.Failure(description=str(exc), metadata={"version": version}) from exc
    move, index_move = promotion.bundle, promotion.index
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
            "index_moved": index_move is not None,
            "index": index_move.new_index if index_move else "",
            "replaced_index": index_move.previous_index if index_move else "",
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
            **comparison_numbers(regression["comparison"]),
        },
    )


EVALUATION_CHECKS = [quality_gate, champion_comparison, champion_holds_up]
