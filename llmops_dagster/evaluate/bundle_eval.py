"""Champion vs challenger: two RAG bundles on the same golden cases, compared, then decided.

Why paired: the candidate and the baseline (the current champion, or the base model when there
is none) answer the *same* questions against the *same* live index, so per-case differences
cancel the questions' own difficulty; the paired bootstrap interval on the mean difference is
then much tighter than two separate means would allow (``evaluate.compare``). The decision
(``evaluate.policy``) promotes only when the primary metric improves and no guard regresses
beyond its margin, on top of the absolute floors.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmops_dagster.evaluate.answer_reuse import RecordedAnswer, SideAnswers, answer_golden
from llmops_dagster.evaluate.compare import MetricComparison, compare_runs
from llmops_dagster.evaluate.golden import GoldenSet
from llmops_dagster.evaluate.metrics import require_metrics_depth, retrieval_depths
from llmops_dagster.evaluate.policy import Decision, PromotionPolicy, decide
from llmops_dagster.evaluate.run import TOKENS_KEY, EvalResult, case_from_answer, evaluate_rag
from llmops_dagster.rag.bundle import TAG_OUTCOME

if TYPE_CHECKING:
    from deepeval.metrics import BaseMetric

    from llmops_dagster.rag.bundle import RagBundle
    from llmops_dagster.rag.pipeline import RagPipeline
    from llmops_dagster.tracking.runs import RunHandle

COMPARISON_ARTIFACT = "evaluation/comparison.json"
BASELINE_TABLE_ARTIFACT = "evaluation/baseline_cases.json"
DECISION_ARTIFACT = "evaluation/decision.json"
#: Mean top retrieval score over the golden questions that retrieved something: what the
#: serving checks compare the served answers' top scores with (retrieval drift).
TOP_SCORE_MEAN = "retrieval.top_score_mean"


@dataclass
class BundleEvaluation:
    """One bundle's answers to the golden set, scored."""

    label: str
    bundle: RagBundle
    result: EvalResult
    #: The answers scored and where they came from (None: not kept).
    answers: SideAnswers | None = None


def evaluate_pipeline(
    pipeline: RagPipeline,
    golden: GoldenSet,
    *,
    metrics: Sequence[BaseMetric],
    batch_size: int = 8,
    judge: Any = None,
    judge_capable: bool = False,
    judge_max_cases: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Answer every golden question through ``pipeline``, each as its item's principal (the
    retriever filters by its groups inside Elasticsearch), and score the answers.

    Raises ValueError before answering anything when the pipeline's ranking depth
    (``retrieval.metrics_depth``, in documents) is shallower than a retrieval metric reads."""
    if retrieval_depths(metrics):
        require_metrics_depth(pipeline.retrieval.metrics_depth, metrics)
    answers = answer_golden(pipeline, golden, batch_size=batch_size, progress=progress)
    return score_answers(
        golden,
        answers,
        metrics=metrics,
        judge=judge,
        judge_capable=judge_capable,
        judge_max_cases=judge_max_cases,
    )


def score_answers(
    golden: GoldenSet,
    answers: Sequence[RecordedAnswer],
    *,
    metrics: Sequence[BaseMetric],
    judge: Any = None,
    judge_capable: bool = False,
    judge_max_cases: int | None = None,
) -> EvalResult:
    """Score one answer per golden item (in golden order, just generated or read back), plus
    the mean top retrieval score (:data:`TOP_SCORE_MEAN`)."""
    ids = [answer.case_id for answer in answers]
    if ids != [item.id for item in golden.items]:
        raise ValueError(f"{len(ids)} answers do not match the {len(golden.items)} golden items")
    pairs = zip(golden.items, answers, strict=True)
    cases = [case_from_answer(item, answer) for item, answer in pairs]
    result = evaluate_rag(
        cases,
        metrics=metrics,
        judge=judge,
        judge_capable=judge_capable,
        judge_max_cases=judge_max_cases,
    )
    top_scores = [answer.top_score for answer in answers if answer.top_score is not None]
    if top_scores:
        # An aggregate, not a metric key: logged with the run, never compared or gated.
        result.aggregates[TOP_SCORE_MEAN] = statistics.fmean(top_scores)
    return result


def compared_metrics(candidate: EvalResult, baseline: EvalResult) -> list[str]:
    """Metrics both runs measured (judge metrics only when they may gate). Each is compared
    over the cases both runs scored (``compare.pair_metric``): a judge metric over the judged
    sample, not over every case."""
    keys = list(candidate.metric_keys)
    if candidate.judge_gates and baseline.judge_gates:
        keys += [k for k in candidate.judge_metric_keys if k in baseline.judge_metric_keys]
    shared = [k for k in keys if k in baseline.metric_keys + baseline.judge_metric_keys]
    # What each answer cost, compared like a metric (lower is better) when both sides know it.
    if _has_tokens(candidate) and _has_tokens(baseline):
        shared.append(TOKENS_KEY)
    return shared


def _has_tokens(result: EvalResult) -> bool:
    return any(row.get(TOKENS_KEY) is not None for row in result.rows)


def compare_and_decide(
    candidate: BundleEvaluation,
    baseline: BundleEvaluation,
    policy: PromotionPolicy,
    *,
    n_resamples: int = 2000,
    seed: int = 13,
    baseline_version: str | None = None,
) -> tuple[list[MetricComparison], Decision]:
    """Paired comparison of every shared metric, then the policy's decision (which records
    ``baseline_version``: the champion version compared with, None = the base model)."""
    comparisons = compare_runs(
        candidate.result.rows,
        baseline.result.rows,
        compared_metrics(candidate.result, baseline.result),
        n_resamples=n_resamples,
        seed=seed,
    )
    decision = decide(
        policy,
        n_cases=candidate.result.n_cases,
        aggregates=candidate.result.aggregates,
        comparisons=comparisons,
        baseline_label=baseline.label,
        baseline_version=baseline_version,
    )
    return comparisons, decision


def comparison_rows(comparisons: Sequence[MetricComparison]) -> list[dict[str, Any]]:
    """One row per metric for tables (Dagster metadata, MLflow artifacts, the demo)."""
    return [c.as_row() for c in comparisons]


def log_comparison(
    run: RunHandle,
    baseline: BundleEvaluation,
    comparisons: Sequence[MetricComparison],
    decision: Decision,
    policy: PromotionPolicy,
) -> None:
    """Into the candidate's evaluation run: the baseline's per-case table, each metric's paired
    difference and interval (``compare.<metric>.diff|ci_low|ci_high``), its paired case count
    and each side's errors among them (``compare.<metric>.n|candidate_errors|baseline_errors``),
    the baseline's own error counts and judge calls (``baseline.<metric>_errors``,
    ``baseline.judge.calls|repaired_calls|failed_calls``), the policy and the decision, so the
    run alone explains why an alias moved or did not. Non-finite values (a metric compared on
    no case) are left out of the metrics; the comparison artifact shows them as null."""
    metrics: dict[str, float] = {}
    for comp in comparisons:
        values = {
            f"compare.{comp.metric}.diff": comp.diff,
            f"compare.{comp.metric}.ci_low": comp.ci_low,
            f"compare.{comp.metric}.ci_high": comp.ci_high,
            f"compare.{comp.metric}.n": comp.n,
            f"compare.{comp.metric}.candidate_errors": comp.candidate_errors,
            f"compare.{comp.metric}.baseline_errors": comp.baseline_errors,
            f"baseline.{comp.metric}": comp.baseline_mean,
        }
        metrics.update({k: float(v) for k, v in values.items() if math.isfinite(v)})
    result = baseline.result
    metrics.update({f"baseline.{k}_errors": float(v) for k, v in result.errors.items()})
    metrics.update(
        {f"baseline.judge.{name}": float(v) for name, v in result.judge_call_counts().items()}
    )
    run.log(
        params={**policy.as_params(), "baseline.label": baseline.label},
        metrics=metrics,
        tags={
            TAG_OUTCOME: decision.outcome,
            "baseline.label": baseline.label,
            "baseline.bundle_key": baseline.bundle.key(),
        },
    )
    run.log_table(baseline.result.to_dataframe(), BASELINE_TABLE_ARTIFACT)
    run.log_json(comparison_rows(comparisons), COMPARISON_ARTIFACT)
    run.log_json(decision.to_dict(), DECISION_ARTIFACT)
