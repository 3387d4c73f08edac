"""Paired comparison of two evaluation runs on the same golden cases.

Why paired: a candidate RAG bundle and the baseline (the current champion, or the base model
when there is none) answer the *same* questions, so per-case differences cancel out how hard
each question is. The mean paired difference with a bootstrap confidence interval says whether
the candidate is better, and by how much we can trust it, which a comparison of two run means
(or floors alone) cannot.

Each metric is paired over the cases scored on *both* sides. A ``None``/NaN score means "not
measured" (a judge metric outside the judged sample, a table read back from MLflow): that case
is left out of that metric's comparison, so ``n`` is per metric. An error is not a gap: the
evaluation scores it 0.0 (``<metric>_error`` says why), so it stays in, and each side's errors
among the paired cases are counted (``candidate_errors``/``baseline_errors``) for the policy's
error-rate limit. The interval is :func:`llmops_dagster.stats.paired_bootstrap`.

Pure numpy: no MLflow, Dagster or DeepEval import, so it is cheap to test and to call anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmops_dagster.stats import paired_bootstrap

#: Per-case metric keys where a smaller value is better (``EvalResult.rows`` carry latency_ms
#: and tokens: prompt + completion tokens per answer).
LOWER_IS_BETTER: frozenset[str] = frozenset({"latency_ms", "tokens"})


def _signed(value: float) -> str:
    """``+0.031`` / ``−0.004`` (a real minus sign, so columns of intervals read cleanly)."""
    return f"{value:+.3f}".replace("-", "−")


@dataclass(frozen=True)
class MetricComparison:
    """Candidate vs baseline on one metric. ``diff`` = candidate − baseline (mean over cases).

    ``diff`` keeps that sign for every metric; ``higher_is_better`` says how to read it
    (latency: a negative diff is an improvement). :meth:`improvement` gives the orientation
    where positive always means "candidate better". ``n``: the cases scored on both sides;
    with ``n == 0`` the means and the interval are NaN (nothing was compared).
    ``candidate_errors``/``baseline_errors``: of those ``n`` cases, how many errored (scored 0).
    """

    metric: str
    n: int
    candidate_mean: float
    baseline_mean: float
    diff: float
    ci_low: float
    ci_high: float
    higher_is_better: bool = True
    candidate_errors: int = 0
    baseline_errors: int = 0

    def error_rate(self, side: str) -> float:
        """Errors / n of ``side`` (``candidate`` or ``baseline``); 0.0 when n is 0."""
        errors = {"candidate": self.candidate_errors, "baseline": self.baseline_errors}[side]
        return errors / self.n if self.n else 0.0

    def improvement(self) -> tuple[float, float, float]:
        """(gain, low, high): diff and interval oriented so that positive = candidate better."""
        if self.higher_is_better:
            return self.diff, self.ci_low, self.ci_high
        return -self.diff, -self.ci_high, -self.ci_low

    def as_row(self) -> dict[str, Any]:
        """Flat dict rounded to 4 decimals, for tables and MLflow (NaN → None: valid JSON)."""
        return {
            "metric": self.metric,
            "n": self.n,
            "candidate_mean": _rounded(self.candidate_mean),
            "baseline_mean": _rounded(self.baseline_mean),
            "diff": _rounded(self.diff),
            "ci_low": _rounded(self.ci_low),
            "ci_high": _rounded(self.ci_high),
            "higher_is_better": self.higher_is_better,
            "candidate_errors": self.candidate_errors,
            "baseline_errors": self.baseline_errors,
        }

    def describe(self) -> str:
        """``token_f1: +0.031 [−0.004, +0.066] (n=150)``."""
        if self.n == 0:
            return f"{self.metric}: not compared (n=0: no case scored on both sides)"
        text = (
            f"{self.metric}: {_signed(self.diff)} "
            f"[{_signed(self.ci_low)}, {_signed(self.ci_high)}] (n={self.n})"
        )
        return text if self.higher_is_better else text + " (lower is better)"


def _rounded(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def _index(rows: Iterable[Mapping[str, Any]], side: str) -> dict[str, Mapping[str, Any]]:
    indexed: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        case_id = str(row["case_id"])
        if case_id in indexed:
            raise ValueError(f"{side} run has case_id {case_id!r} more than once")
        indexed[case_id] = row
    return indexed


def _score(row: Mapping[str, Any], metric: str) -> float | None:
    """The row's score, or None when it was not measured (missing, None or NaN)."""
    raw = row.get(metric)
    if raw is None:
        return None
    value = float(raw)
    return None if math.isnan(value) else value


def error_column(metric: str) -> str:
    """The row column holding the error text of ``metric`` (None/absent: no error)."""
    return f"{metric}_error"


def _errored(row: Mapping[str, Any], metric: str) -> bool:
    # A table read back from MLflow carries NaN (not None) where there was no error.
    value = row.get(error_column(metric))
    return value is True or (isinstance(value, str) and bool(value.strip()))


@dataclass(frozen=True)
class PairedScores:
    """One metric's scores on the cases scored on both sides, aligned by ``case_id``."""

    case_ids: tuple[str, ...]
    candidate: np.ndarray
    baseline: np.ndarray
    candidate_errors: int
    baseline_errors: int

    @property
    def n(self) -> int:
        return len(self.case_ids)


def pair_metric(
    candidate_rows: Sequence[Mapping[str, Any]],
    baseline_rows: Sequence[Mapping[str, Any]],
    metric: str,
) -> PairedScores:
    """Scores of both runs on the cases *both* scored, aligned by ``case_id`` (sorted).

    The runs must cover exactly the same cases: a case on one side only raises ValueError
    naming the ids, because a comparison on different questions is not a paired comparison.

    A case whose score is missing (None/NaN: not measured, e.g. not in the judge sample) on
    either side is left out of this metric. Errors are not missing: the evaluation scores an
    error 0.0 (an error must never help a candidate by vanishing from its mean), so they stay
    in and are counted per side.
    """
    cand = _index(candidate_rows, "candidate")
    base = _index(baseline_rows, "baseline")
    only_cand = sorted(set(cand) - set(base))
    only_base = sorted(set(base) - set(cand))
    if only_cand or only_base:
        raise ValueError(
            "runs must answer the same cases: "
            f"only in candidate {only_cand}, only in baseline {only_base}"
        )
    ids: list[str] = []
    c: list[float] = []
    b: list[float] = []
    for case_id in sorted(cand):
        c_score, b_score = _score(cand[case_id], metric), _score(base[case_id], metric)
        if c_score is None or b_score is None:
            continue
        ids.append(case_id)
        c.append(c_score)
        b.append(b_score)
    return PairedScores(
        case_ids=tuple(ids),
        candidate=np.array(c, dtype=float),
        baseline=np.array(b, dtype=float),
        candidate_errors=sum(_errored(cand[i], metric) for i in ids),
        baseline_errors=sum(_errored(base[i], metric) for i in ids),
    )


def paired_scores(
    candidate_rows: Sequence[Mapping[str, Any]],
    baseline_rows: Sequence[Mapping[str, Any]],
    metric: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-case scores of both runs on the cases both scored (see :func:`pair_metric`)."""
    paired = pair_metric(candidate_rows, baseline_rows, metric)
    return paired.candidate, paired.baseline


def compare_runs(
    candidate_rows: Sequence[Mapping[str, Any]],
    baseline_rows: Sequence[Mapping[str, Any]],
    metrics: Iterable[str],
    *,
    lower_is_better: frozenset[str] = LOWER_IS_BETTER,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 13,
) -> list[MetricComparison]:
    """One :class:`MetricComparison` per metric (in the order given), same seed for each, each
    over the cases scored on both sides (its own ``n``).

    For lower-is-better metrics ``diff`` stays candidate − baseline; ``higher_is_better`` is
    False so readers (and the promotion policy) mirror the sign. Runs with no cases at all
    raise; a metric no case was scored on by both sides comes back with ``n == 0`` and NaN
    statistics, so the policy can refuse on it by name instead of the whole run failing.
    """
    out: list[MetricComparison] = []
    nan = float("nan")
    for metric in metrics:
        higher = metric not in lower_is_better
        paired = pair_metric(candidate_rows, baseline_rows, metric)
        if not candidate_rows:
            raise ValueError("cannot compare runs with no cases (n=0)")
        if paired.n == 0:
            out.append(MetricComparison(metric, 0, nan, nan, nan, nan, nan, higher))
            continue
        diff, low, high = paired_bootstrap(
            paired.candidate,
            paired.baseline,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
        )
        out.append(
            MetricComparison(
                metric=metric,
                n=paired.n,
                candidate_mean=float(paired.candidate.mean()),
                baseline_mean=float(paired.baseline.mean()),
                diff=diff,
                ci_low=low,
                ci_high=high,
                higher_is_better=higher,
                candidate_errors=paired.candidate_errors,
                baseline_errors=paired.baseline_errors,
            )
        )
    return out
