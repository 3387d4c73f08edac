"""Log an evaluation to MLflow: aggregate metrics, the per-case table, the golden set as a
dataset input (with its digest), and the parameters that make the score reproducible (judge,
gate thresholds, model and prompt versions, index alias and physical index).

Why log the golden set as an *input*: two evaluation runs are only comparable on the same golden
set; MLflow shows the dataset name + digest on each run, so the UI can filter runs by it.
MLflow stores at most 36 characters of a dataset digest, so the input carries the first 32 hex
characters and the full sha256 goes into the ``llmops.golden_sha256`` tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmops_dagster.evaluate.gate import GateConfig, GateResult
from llmops_dagster.evaluate.golden import GoldenSet
from llmops_dagster.evaluate.run import EvalResult
from llmops_dagster.tracking.runs import RunHandle

TABLE_ARTIFACT = "evaluation/cases.json"
GATE_ARTIFACT = "evaluation/gate.json"
SUMMARY_ARTIFACT = "evaluation/summary.md"


def evaluation_params(
    result: EvalResult,
    golden: GoldenSet,
    *,
    gate_config: GateConfig | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Flat string params: ``context`` (model_name, model_version, prompt_version, index_alias,
    index_name, …) + judge, engine, golden identity and gate thresholds."""
    params: dict[str, str] = {str(k): str(v) for k, v in (context or {}).items() if v is not None}
    params.update(
        {
            "judge": result.judge or "none",
            "judge_gates": str(result.judge_gates).lower(),
            "judge_cases": str(result.judge_cases),
            "engine": result.engine,
            "golden_name": golden.name,
            "golden_version": golden.short_version,
            "golden_format": golden.format,
            "n_cases": str(result.n_cases),
            "metrics": ",".join(result.metric_keys + result.judge_metric_keys),
        }
    )
    if gate_config is not None:
        params.update(gate_config.as_params())
    return params


def log_evaluation(
    run: RunHandle,
    result: EvalResult,
    golden: GoldenSet,
    *,
    gate_config: GateConfig | None = None,
    gate_result: GateResult | None = None,
    context: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log one evaluation into ``run`` (opened by the caller with its lineage tags); returns
    the run id. ``context`` values become params (see :func:`evaluation_params`). Besides the
    aggregates: ``<metric>_errors`` for every metric (0 included) and the judge's
    ``judge.calls|repaired_calls|failed_calls`` during this evaluation."""
    metrics = {k: float(v) for k, v in result.aggregates.items() if v is not None}
    for key, count in result.errors.items():
        metrics[f"{key}_errors"] = float(count)
    for name, count in result.judge_call_counts().items():
        metrics[f"judge.{name}"] = float(count)
    metrics["eval_seconds"] = float(result.seconds)
    if gate_result is not None:
        metrics["gate_passed"] = float(gate_result.passed)
        for failure in gate_result.failures:
            if failure.value is not None:
                metrics[f"gate_shortfall.{failure.metric}"] = float(failure.shortfall)
    run.log(
        params=evaluation_params(result, golden, gate_config=gate_config, context=context),
        metrics=metrics,
        tags={
            "llmops.kind": "evaluation",
            "llmops.golden_sha256": golden.version,
            "llmops.judge": result.judge or "none",
            **{str(k): str(v) for k, v in (tags or {}).items()},
        },
    )
    run.log_table(result.to_dataframe(), TABLE_ARTIFACT)
    run.log_dataframe_input(
        golden.to_dataframe(),
        name=golden.name,
        digest=golden.version[:32],
        source=golden.path.resolve().as_uri() if golden.path else golden.name,
        context="evaluation",
    )
    run.log_text(result.summary_markdown(), SUMMARY_ARTIFACT)
    if gate_result is not None:
        run.log_json(gate_result.to_dict(), GATE_ARTIFACT)
    return run.run_id
