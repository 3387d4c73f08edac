"""Run an evaluation: golden questions → RAG answers → DeepEval test cases → scores.

Why two engines for the judge-free metrics: ``engine="deepeval"`` runs them inside DeepEval's
``evaluate()`` (async, concurrent, the same report path as the judge metrics);
``engine="direct"`` calls the same metric objects in a plain loop, which skips DeepEval's
per-run bookkeeping (test-run files, per-case metric copies) when only cheap deterministic
metrics run. Judge metrics always go through DeepEval ``evaluate()``: their multi-step
prompting, verdict scoring and error handling are DeepEval's, not ours.

Judge metrics may run on a sample of the cases (``judge_max_cases``): a CPU judge needs several
seconds per call and several calls per case. The result records which judge ran, on how many
cases, whether its metrics gate (``judge_gates``) and how its calls went (``judge_stats``).

Not judged is not failed: in the rows, a judge metric of a case outside the judged sample is
``None`` (not measured), while a metric that errored on a case — a judge call that failed or
answered outside the schema, a deterministic metric that raised, a case DeepEval returned no
result for — scores 0.0 with the error text in ``<metric>_error`` and is counted in ``errors``.
An error is a 0, never a gap: dropping it would let a run that fails on hard cases look better.

Size (~470 lines, kept whole on purpose): one job, scoring cases into one :class:`EvalResult`;
the case type, the two engines (DeepEval, direct) and the result's rows, aggregates and error
counts share one row format, which the rules above define.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import llmops_dagster.evaluate  # noqa: F401  - DeepEval cache folder default before deepeval
from llmops_dagster.access import Principal
from llmops_dagster.evaluate.golden import GoldenSet
from llmops_dagster.evaluate.metrics import (
    GRADES_KEY,
    RELEVANT_KEY,
    RETRIEVAL_METRIC_TYPES,
    RETRIEVED_KEY,
    default_metrics,
    judge_metrics,
    metric_key,
)
from llmops_dagster.qa import QAItem
from llmops_dagster.stats import percentile

if TYPE_CHECKING:
    import pandas as pd
    from deepeval.metrics import BaseMetric
    from deepeval.test_case import LLMTestCase


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

#: The per-case row column with the answer's prompt + completion tokens: compared between
#: the sides (lower is better) and read by the policy's cost rule (``max_cost_ratio``).
TOKENS_KEY = "tokens"


@dataclass
class EvalCase:
    """One golden question with the pipeline's answer and what was retrieved for it."""

    case_id: str
    question: str
    actual_output: str
    expected_output: str | None = None
    retrieval_context: list[str] = field(default_factory=list)
    #: Document ids of the retrieved chunks, in rank order (duplicates allowed: chunk hits).
    retrieved_doc_ids: list[str] = field(default_factory=list)
    relevant_doc_ids: list[str] = field(default_factory=list)
    relevance_grades: dict[str, int] = field(default_factory=dict)
    retrieved_chunk_ids: list[str] = field(default_factory=list)
    latency_ms: float | None = None
    #: Prompt + completion tokens of the answer (0: no model; None: not known).
    tokens: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Groups of the principal the case was answered as (empty: public documents only).
    groups: list[str] = field(default_factory=list)

    def to_test_case(self) -> LLMTestCase:
        from deepeval.test_case import LLMTestCase

        return LLMTestCase(
            name=self.case_id,
            input=self.question,
            actual_output=self.actual_output,
            expected_output=self.expected_output,
            # Faithfulness needs a non-empty context; an empty retrieval is scored as such.
            retrieval_context=list(self.retrieval_context) or [""],
            completion_time=(self.latency_ms / 1000) if self.latency_ms is not None else None,
            metadata={
                **self.metadata,
                RETRIEVED_KEY: list(self.retrieved_doc_ids),
                RELEVANT_KEY: list(self.relevant_doc_ids),
                GRADES_KEY: dict(self.relevance_grades),
            },
        )


class RetrievedLike(Protocol):
    """A retrieved chunk (``rag.answer.RetrievedChunk`` fits)."""

    chunk_id: str
    doc_id: str
    text: str


class AnswerLike(Protocol):
    """What :func:`build_cases` reads from an answer (``rag.answer.Answer`` fits)."""

    text: str
    total_ms: float

    @property
    def retrieved(self) -> Sequence[RetrievedLike]: ...

    @property
    def ranked_doc_ids(self) -> list[str]:
        """Document ids of the ranking retrieval metrics read (≥ the prompt's chunks)."""
        ...


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def answer_tokens(answer: Any, field_name: str) -> int | None:
    """``answer.<field_name>`` (``prompt_tokens``/``completion_tokens``) as an int; None when
    the answer does not carry it (an answer recorded before tokens were)."""
    return optional_int(getattr(answer, field_name, None))


def total_tokens(answer: Any) -> int | None:
    """Prompt + completion tokens: what an answer costs a token-priced endpoint."""
    prompt, completion = (
        answer_tokens(answer, "prompt_tokens"),
        answer_tokens(answer, "completion_tokens"),
    )
    return None if prompt is None or completion is None else prompt + completion


#: Answers a batch of questions asked by one principal in one call (``lambda qs, who:
#: pipeline.answer_many(qs, principal=who)``): batched generation is where evaluation
#: throughput comes from, and the principal is what retrieval may show the case.
AnswerFn = Callable[[Sequence[str], Principal], Sequence[AnswerLike]]


def case_from_answer(item: QAItem, answer: AnswerLike) -> EvalCase:
    chunks = list(answer.retrieved)
    return EvalCase(
        case_id=item.id,
        question=item.question,
        actual_output=answer.text,
        expected_output=item.reference_answer,
        retrieval_context=[c.text for c in chunks],
        # The full ranking when the answer kept one (metrics at their depth), else the context.
        retrieved_doc_ids=list(answer.ranked_doc_ids or [c.doc_id for c in chunks]),
        relevant_doc_ids=list(item.relevant_doc_ids),
        relevance_grades=dict(item.relevance_grades),
        retrieved_chunk_ids=[c.chunk_id for c in chunks],
        latency_ms=float(answer.total_ms),
        tokens=total_tokens(answer),
        metadata={"type": item.type},
        groups=list(item.groups),
    )


def answer_items(
    golden: GoldenSet | Sequence[QAItem], answer_fn: AnswerFn, *, batch_size: int = 8
) -> list[AnswerLike]:
    """Answer every golden question as its own principal (``item.principal``), in batches of
    ``batch_size`` questions of the same principal; answers come back in golden-set order.

    Why per principal: a case may only be answered from what its asker can read, and the
    filter is applied inside Elasticsearch per search, so one batch = one principal.
    """
    items = list(golden.items if isinstance(golden, GoldenSet) else golden)
    by_groups: dict[tuple[str, ...], list[int]] = {}
    for index, item in enumerate(items):
        by_groups.setdefault(item.groups, []).append(index)
    answered: dict[int, AnswerLike] = {}
    step = max(1, batch_size)
    for indices in by_groups.values():
        principal = items[indices[0]].principal
        for start in range(0, len(indices), step):
            batch = indices[start : start + step]
            answers = list(answer_fn([items[i].question for i in batch], principal))
            if len(answers) != len(batch):
                raise ValueError(
                    f"answer_fn returned {len(answers)} answers for {len(batch)} questions"
                )
            answered.update(zip(batch, answers, strict=True))
    return [answered[i] for i in range(len(items))]


def build_cases(
    golden: GoldenSet | Sequence[QAItem], answer_fn: AnswerFn, *, batch_size: int = 8
) -> list[EvalCase]:
    """Every golden question answered (:func:`answer_items`: as its own principal, batched)
    and turned into a case; cases come back in golden-set order."""
    items = list(golden.items if isinstance(golden, GoldenSet) else golden)
    answers = answer_items(items, answer_fn, batch_size=batch_size)
    return [case_from_answer(item, answer) for item, answer in zip(items, answers, strict=True)]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Per-case rows, aggregate means and what produced them.

    ``rows``: one dict per case (``case_id``, ``question``, ``actual_output``,
    ``expected_output``, ``latency_ms``, ids as JSON strings, then per metric ``<metric>`` (the
    score; 0.0 when it errored; ``None`` when the case was not judged), ``<metric>_reason`` and
    ``<metric>_error`` (the error text, ``None`` when it did not error)).
    ``aggregates``: ``<metric>`` = mean over the cases it scored (errors as 0.0), plus
    ``latency_ms_mean``, ``latency_ms_p95`` (nearest-rank, :func:`llmops_dagster.stats.percentile`)
    and ``n_cases``.
    ``errors``: every metric → cases it errored on (0 included). ``judge_stats``: the judge's
    ``{"calls", "repaired", "failed"}`` during this evaluation (None: no judge, or one that
    keeps no count).
    """

    rows: list[dict[str, Any]]
    aggregates: dict[str, float]
    metric_keys: list[str]
    judge_metric_keys: list[str]
    judge: str | None
    judge_gates: bool
    judge_cases: int
    errors: dict[str, int]
    seconds: float
    engine: str
    notes: list[str] = field(default_factory=list)
    judge_stats: dict[str, int] | None = None

    @property
    def n_cases(self) -> int:
        return len(self.rows)

    def to_dataframe(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows)

    def summary_markdown(self) -> str:
        """A Markdown table of the aggregates (Dagster metadata, run descriptions)."""
        lines = ["| metric | mean | kind | errors |", "|---|---|---|---|"]
        for key in self.metric_keys + self.judge_metric_keys:
            value = self.aggregates.get(key)
            kind = (
                "judge (gates)"
                if key in self.judge_metric_keys and self.judge_gates
                else ("judge (report only)" if key in self.judge_metric_keys else "deterministic")
            )
            shown = "n/a" if value is None else f"{value:.3f}"
            lines.append(f"| {key} | {shown} | {kind} | {self.errors.get(key, 0)} |")
        if self.judge_stats is not None:
            stats = self.judge_stats
            lines.append(
                f"\njudge {self.judge}: {stats['calls']} calls, {stats['repaired']} repaired, "
                f"{stats['failed']} failed, on {self.judge_cases} of {self.n_cases} cases"
            )
        return "\n".join(lines)

    def judge_call_counts(self) -> dict[str, int]:
        """``{"calls", "repaired_calls", "failed_calls"}`` of this run's judge (metric and
        metadata names); {} when there was no judge or it kept no count."""
        if self.judge_stats is None:
            return {}
        return {
            "calls": self.judge_stats["calls"],
            "repaired_calls": self.judge_stats["repaired"],
            "failed_calls": self.judge_stats["failed"],
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _name_to_key(name: str) -> str:
    geval = re.fullmatch(r"(.+?)\s*\[GEval\]", name)
    if geval:
        name = f"geval_{geval.group(1)}"
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _needs_reference(metric: BaseMetric) -> bool:
    """Answer metrics compare with a reference answer; retrieval metrics and metrics that say
    so (``needs_reference = False``: online citation validity) do not."""
    return bool(getattr(metric, "needs_reference", not isinstance(metric, RETRIEVAL_METRIC_TYPES)))


def _run_deepeval(
    test_cases: list[LLMTestCase],
    metrics: list[BaseMetric],
    *,
    max_concurrent: int,
    show_progress: bool,
) -> dict[str, dict[str, tuple[float | None, str | None, str | None]]]:
    """DeepEval ``evaluate()`` → {case name: {metric key: (score, reason, error)}}."""
    from deepeval import evaluate

    # DeepEval prints a results banner even with print_results=False; keep logs clean unless
    # progress was asked for.
    quiet = contextlib.nullcontext() if show_progress else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        result = _evaluate(evaluate, test_cases, metrics, max_concurrent, show_progress)
    return _collect(result)


def _evaluate(
    evaluate: Callable[..., Any],
    test_cases: list[LLMTestCase],
    metrics: list[BaseMetric],
    max_concurrent: int,
    show_progress: bool,
) -> Any:
    from deepeval.evaluate.configs import AsyncConfig, CacheConfig, DisplayConfig, ErrorConfig

    return evaluate(
        test_cases=test_cases,
        metrics=metrics,
        async_config=AsyncConfig(run_async=True, max_concurrent=max_concurrent),
        display_config=DisplayConfig(
            show_indicator=show_progress, print_results=False, inspect_after_run=False
        ),
        cache_config=CacheConfig(write_cache=False, use_cache=False),
        # One failing judge call must not abort the whole evaluation: it is counted instead.
        error_config=ErrorConfig(ignore_errors=True),
    )


def _collect(result: Any) -> dict[str, dict[str, tuple[float | None, str | None, str | None]]]:
    out: dict[str, dict[str, tuple[float | None, str | None, str | None]]] = {}
    for test_result in result.test_results:
        per_metric = out.setdefault(str(test_result.name), {})
        for data in test_result.metrics_data or []:
            per_metric[_name_to_key(str(data.name))] = (data.score, data.reason, data.error)
    return out


def _run_direct(
    test_cases: list[LLMTestCase], metrics: list[BaseMetric]
) -> dict[str, dict[str, tuple[float | None, str | None, str | None]]]:
    out: dict[str, dict[str, tuple[float | None, str | None, str | None]]] = {}
    for case in test_cases:
        per_metric = out.setdefault(str(case.name), {})
        for metric in metrics:
            try:
                metric.measure(case)
                per_metric[metric_key(metric)] = (metric.score, metric.reason, None)
            except Exception as exc:  # same contract as DeepEval's ignore_errors
                per_metric[metric_key(metric)] = (None, None, f"{type(exc).__name__}: {exc}")
    return out


#: Cases a weak judge scores when the run names no limit: its metrics only report (they never
#: gate), and a CPU judge needs seconds per call.
WEAK_JUDGE_CASES = 3


def judge_case_limit(max_cases: int | None, *, capable: bool) -> int | None:
    """How many cases the judge scores (None: every case). ``max_cases`` when given; otherwise
    every case for a capable judge — its metrics may gate, and a gate over a sample would
    decide on cases the other metrics did not choose — and :data:`WEAK_JUDGE_CASES` for a weak
    one. Raises ValueError naming ``judge_max_cases`` below 1."""
    if max_cases is not None:
        if max_cases < 1:
            raise ValueError(f"judge_max_cases must be at least 1 (or unset), not {max_cases}")
        return max_cases
    return None if capable else WEAK_JUDGE_CASES


def evaluate_rag(
    cases: Sequence[EvalCase],
    *,
    metrics: Sequence[BaseMetric] | None = None,
    judge: Any = None,
    judge_capable: bool = False,
    judge_metric_list: Sequence[BaseMetric] | None = None,
    judge_max_cases: int | None = None,
    engine: Literal["deepeval", "direct"] = "deepeval",
    max_concurrent: int = 8,
    show_progress: bool = False,
) -> EvalResult:
    """Score ``cases`` with judge-free ``metrics`` (default :func:`default_metrics`) and, when
    a ``judge`` (a ``DeepEvalBaseLLM``) is given, DeepEval's judge metrics through
    ``evaluate()`` on the first ``judge_max_cases`` cases. ``judge_capable`` is recorded as
    ``judge_gates``: only then may a gate read the judge metrics.

    Answer metrics need a reference answer: when some case has none (a BEIR golden set) they are
    left out and a note says so.
    """
    started = time.perf_counter()
    cases = list(cases)
    if not cases:
        raise ValueError("evaluate_rag needs at least one case")
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError("case ids must be unique (they key DeepEval's results)")
    notes: list[str] = []
    deterministic = list(metrics) if metrics is not None else default_metrics()
    if any(not c.expected_output for c in cases):
        dropped = [metric_key(m) for m in deterministic if _needs_reference(m)]
        deterministic = [m for m in deterministic if not _needs_reference(m)]
        if dropped:
            notes.append(f"no reference answer on some cases: skipped {dropped}")
    test_cases = [c.to_test_case() for c in cases]

    scores: dict[str, dict[str, tuple[float | None, str | None, str | None]]] = {}
    if deterministic:
        if engine == "deepeval":
            scores = _run_deepeval(
                test_cases,
                deterministic,
                max_concurrent=max_concurrent,
                show_progress=show_progress,
            )
        else:
            scores = _run_direct(test_cases, deterministic)
    metric_keys = [metric_key(m) for m in deterministic]

    judge_name: str | None = None
    judge_keys: list[str] = []
    judge_cases = 0
    judged_ids: set[str] = set()
    stats: dict[str, int] | None = None
    if judge is not None:
        from llmops_dagster.evaluate.judge import judge_stats

        judge_name = str(judge.get_model_name())
        jm = list(judge_metric_list) if judge_metric_list is not None else judge_metrics(judge)
        judge_keys = [metric_key(m) for m in jm]
        sample = test_cases[: judge_max_cases or len(test_cases)]
        judge_cases = len(sample)
        judged_ids = {str(c.name) for c in sample}
        before = judge_stats(judge)
        judged = _run_deepeval(
            sample, jm, max_concurrent=max_concurrent, show_progress=show_progress
        )
        after = judge_stats(judge)
        if before is not None and after is not None:
            stats = {key: after[key] - before[key] for key in after}
        for name, per_metric in judged.items():
            scores.setdefault(name, {}).update(per_metric)
        if judge_cases < len(cases):
            notes.append(f"judge metrics on the first {judge_cases} of {len(cases)} cases")
        if not judge_capable:
            notes.append("judge declared not capable: judge metrics are reported, not gated")

    rows: list[dict[str, Any]] = []
    errors: dict[str, int] = dict.fromkeys(metric_keys + judge_keys, 0)
    for case in cases:
        row: dict[str, Any] = {
            "case_id": case.case_id,
            "question": case.question,
            "actual_output": case.actual_output,
            "expected_output": case.expected_output,
            "latency_ms": case.latency_ms,
            TOKENS_KEY: case.tokens,
            "retrieved_doc_ids": json.dumps(case.retrieved_doc_ids),
            "relevant_doc_ids": json.dumps(case.relevant_doc_ids),
            # Who the case was answered as: the row holds only what these groups may read.
            "groups": json.dumps(case.groups),
        }
        per_metric = scores.get(case.case_id, {})
        for key in metric_keys + judge_keys:
            if key in judge_keys and case.case_id not in judged_ids:
                # Not in the judge sample: not measured (None), which is not an error.
                row[key] = row[f"{key}_reason"] = row[f"{key}_error"] = None
                continue
            score, reason, error = _outcome(per_metric.get(key))
            # An error scores 0: dropping it from the mean would let a failing case help.
            row[key] = 0.0 if error else score
            row[f"{key}_reason"] = None if error else reason
            row[f"{key}_error"] = error
            if error:
                errors[key] += 1
        rows.append(row)

    aggregates: dict[str, float] = {"n_cases": float(len(cases))}
    for key in metric_keys + judge_keys:
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        if values:
            aggregates[key] = statistics.fmean(values)
    tokens = [float(c.tokens) for c in cases if c.tokens is not None]
    if tokens:
        aggregates["tokens_mean"] = statistics.fmean(tokens)
    latencies = [float(c.latency_ms) for c in cases if c.latency_ms is not None]
    if latencies:
        aggregates["latency_ms_mean"] = statistics.fmean(latencies)
        aggregates["latency_ms_p95"] = percentile(latencies, 95)
    return EvalResult(
        rows=rows,
        aggregates=aggregates,
        metric_keys=metric_keys,
        judge_metric_keys=judge_keys,
        judge=judge_name,
        judge_gates=bool(judge is not None and judge_capable),
        judge_cases=judge_cases,
        errors=errors,
        seconds=time.perf_counter() - started,
        engine=engine,
        notes=notes,
        judge_stats=stats,
    )


def _outcome(
    measured: tuple[float | None, str | None, str | None] | None,
) -> tuple[float | None, str | None, str | None]:
    """(score, reason, error) of one metric on one case that was meant to be measured: no
    result, or a result without a finite score, is an error too (never a silent gap)."""
    if measured is None:
        return None, None, "no result: the metric did not report on this case"
    score, reason, error = measured
    if error:
        return None, reason, str(error)
    if score is None or not math.isfinite(float(score)):
        return None, reason, f"no usable score ({score!r}) and no error reported"
    return float(score), reason, None
