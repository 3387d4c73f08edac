"""Paired comparison of two evaluation runs on the same golden cases.

Why paired: a candidate RAG bundle and the baseline (the current champion, or the base model
when there is none) answer the *same* questions, so per-case differences cancel out how hard
each question is. The mean paired difference with a bootstrap confidence interval says whether
the candidate is better, and by how much we can trust it, which a comparison of two run means
(or floors alone) cannot.

Pure numpy: no MLflow, Dagster or DeepEval import, so it is cheap to test and to call anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Per-case metric keys where a smaller value is better (``EvalResult.rows`` carry latency_ms).
LOWER_IS_BETTER: frozenset[str] = frozenset({"latency_ms"})

#: Upper bound on resample-index elements held at once (memory of the vectorised bootstrap).
_CHUNK_ELEMENTS = 2_000_000


def _signed(value: float) -> str:
    """``+0.031`` / ``−0.004`` (a real minus sign, so columns of intervals read cleanly)."""
    return f"{value:+.3f}".replace("-", "−")


@dataclass(frozen=True)
class MetricComparison:
    """Candidate vs baseline on one metric. ``diff`` = candidate − baseline (mean over cases).

    ``diff`` keeps that sign for every metric; ``higher_is_better`` says how to read it
    (latency: a negative diff is an improvement). :meth:`improvement` gives the orientation
    where positive always means "candidate better".
    """

    metric: str
    n: int
    candidate_mean: float
    baseline_mean: float
    diff: float
    ci_low: float
    ci_high: float
    higher_is_better: bool = True

    def improvement(self) -> tuple[float, float, float]:
        """(gain, low, high): diff and interval oriented so that positive = candidate better."""
        if self.higher_is_better:
            return self.diff, self.ci_low, self.ci_high
        return -self.diff, -self.ci_high, -self.ci_low

    def as_row(self) -> dict[str, Any]:
        """Flat dict rounded to 4 decimals, for tables and MLflow."""
        return {
            "metric": self.metric,
            "n": self.n,
            "candidate_mean": round(self.candidate_mean, 4),
            "baseline_mean": round(self.baseline_mean, 4),
            "diff": round(self.diff, 4),
            "ci_low": round(self.ci_low, 4),
            "ci_high": round(self.ci_high, 4),
            "higher_is_better": self.higher_is_better,
        }

    def describe(self) -> str:
        """``token_f1: +0.031 [−0.004, +0.066] (n=150)``."""
        text = (
            f"{self.metric}: {_signed(self.diff)} "
            f"[{_signed(self.ci_low)}, {_signed(self.ci_high)}] (n={self.n})"
        )
        return text if self.higher_is_better else text + " (lower is better)"


def _index(rows: Iterable[Mapping[str, Any]], side: str) -> dict[str, Mapping[str, Any]]:
    indexed: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        case_id = str(row["case_id"])
        if case_id in indexed:
            raise ValueError(f"{side} run has case_id {case_id!r} more than once")
        indexed[case_id] = row
    return indexed


def _score(row: Mapping[str, Any], metric: str) -> float | None:
    raw = row.get(metric)
    if raw is None:
        return None
    value = float(raw)
    return None if math.isnan(value) else value


def paired_scores(
    candidate_rows: Sequence[Mapping[str, Any]],
    baseline_rows: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    higher_is_better: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-case scores of both runs, aligned by ``case_id`` (sorted), as two float arrays.

    The runs must cover exactly the same cases: a case on one side only raises ValueError
    naming the ids, because a comparison on different questions is not a paired comparison.

    A missing score (None/NaN: the metric errored or did not run) counts as the worst score,
    0.0 for higher-is-better metrics. Why: dropping the case would let a candidate raise its
    mean by erroring on the hard questions; an error must never help a candidate. For
    lower-is-better metrics (latency) 0.0 would be the *best* value, so there a missing score
    counts as the largest value observed in either run.
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
    ids = sorted(cand)
    c_raw = [_score(cand[i], metric) for i in ids]
    b_raw = [_score(base[i], metric) for i in ids]
    if higher_is_better:
        worst = 0.0
    else:
        seen = [v for v in c_raw + b_raw if v is not None]
        worst = max(seen) if seen else 0.0
    c = np.array([worst if v is None else v for v in c_raw], dtype=float)
    b = np.array([worst if v is None else v for v in b_raw], dtype=float)
    return c, b


def paired_bootstrap(
    candidate: np.ndarray | Sequence[float],
    baseline: np.ndarray | Sequence[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 13,
) -> tuple[float, float, float]:
    """(mean diff, ci_low, ci_high) of the mean paired difference candidate − baseline.

    Percentile bootstrap over case indices: each resample draws n cases with replacement and
    takes the mean of their differences (vectorised, in chunks to bound memory). Deterministic
    for a given seed. All-equal differences have no sampling spread: the interval collapses to
    [d, d]. The interval is widened to contain the point estimate if it does not (floating
    point, extreme skew): widening can only make a decision more cautious.
    """
    c = np.asarray(candidate, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if c.shape != b.shape or c.ndim != 1:
        raise ValueError(f"need two 1-d arrays of equal length, got {c.shape} and {b.shape}")
    n = c.size
    if n == 0:
        raise ValueError("cannot compare runs with no cases (n=0)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = c - b
    if not np.all(np.isfinite(d)):
        raise ValueError("scores must be finite (map missing scores first: paired_scores)")
    mean = float(d.mean())
    if float(np.ptp(d)) <= 1e-12 * max(1.0, abs(mean)):
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=float)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, step):
        size = min(step, n_resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        means[start : start + size] = d[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1.0 - alpha / 2])
    return mean, min(float(low), mean), max(float(high), mean)


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
    """One :class:`MetricComparison` per metric (in the order given), same seed for each.

    For lower-is-better metrics ``diff`` stays candidate − baseline; ``higher_is_better`` is
    False so readers (and the promotion policy) mirror the sign.
    """
    out: list[MetricComparison] = []
    for metric in metrics:
        higher = metric not in lower_is_better
        c, b = paired_scores(candidate_rows, baseline_rows, metric, higher_is_better=higher)
        diff, low, high = paired_bootstrap(
            c, b, n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        out.append(
            MetricComparison(
                metric=metric,
                n=int(c.size),
                candidate_mean=float(c.mean()),
                baseline_mean=float(b.mean()),
                diff=diff,
                ci_low=low,
                ci_high=high,
                higher_is_better=higher,
            )
        )
    return out
