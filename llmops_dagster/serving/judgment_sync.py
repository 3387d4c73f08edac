"""Online judgments → MLflow assessments on the served answers' traces.

One ``Feedback`` assessment per (trace, metric), named ``judge.<metric>``: source ``LLM_JUDGE``
with the judge's model id for a judge metric, ``CODE`` for a deterministic one. Re-judging a
day replaces a trace's earlier assessment of the same name and source rather than piling up
(MLflow keeps every logged assessment). An errored metric is logged with its error, not a score.
Only public answers are judged (:mod:`llmops_dagster.evaluate.online`), so a rationale never
carries restricted text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from llmops_dagster.evaluate.online import Judgment

PREFIX = "judge."
CODE_SOURCE = "llmops_dagster.evaluate.online"


def assessment_name(metric: str) -> str:
    return f"{PREFIX}{metric}"


def log_judgments(tracking_uri: str, judgments: Sequence[Judgment]) -> int:
    """Write ``judgments`` to their traces; returns how many assessments were logged."""
    from mlflow.entities import AssessmentError, AssessmentSource, AssessmentSourceType, Feedback
    from mlflow.tracing.client import TracingClient

    client = TracingClient(tracking_uri)
    by_trace: dict[str, list[Judgment]] = defaultdict(list)
    for judgment in judgments:
        if judgment.score is not None or judgment.error:  # None without error: not measured
            by_trace[judgment.trace_id].append(judgment)
    written = 0
    for trace_id, own in by_trace.items():
        sources = {
            j.metric: (
                AssessmentSource(AssessmentSourceType.CODE, CODE_SOURCE)
                if j.judge == "code"
                else AssessmentSource(AssessmentSourceType.LLM_JUDGE, j.judge)
            )
            for j in own
        }
        names = {assessment_name(m): s for m, s in sources.items()}
        info = client.get_trace_info(trace_id)
        for old in info.assessments or []:
            source = names.get(old.name)
            if source is not None and old.source.source_id == source.source_id:
                client.delete_assessment(trace_id, old.assessment_id)
        for j in own:
            client.log_assessment(
                trace_id,
                Feedback(
                    name=assessment_name(j.metric),
                    source=sources[j.metric],
                    value=None if j.error else j.score,
                    error=AssessmentError(error_code="JUDGE_ERROR", error_message=j.error)
                    if j.error
                    else None,
                    rationale=j.reason,
                ),
            )
            written += 1
    return written
