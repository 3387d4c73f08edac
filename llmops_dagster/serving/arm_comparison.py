"""The challenger against the champion on what users actually got, on the same days.

Per metric, the mean over each bundle's served answers on the days *both* answered (a day only
one of them served says nothing about the other), the difference challenger − champion and its
95 % bootstrap interval. The answers are different questions (a rollout split sends different
callers to each), so the interval is an unpaired bootstrap
(:func:`llmops_dagster.stats.bootstrap_mean_difference`); shadow answers are the same
questions, which this comparison does not exploit (it stays valid, only wider). Metrics:
``latency_ms`` and ``tokens`` (lower is better), ``cited`` (the answer cites a chunk) and, over
rated answers, ``thumbs_down``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llmops_dagster.serving.daily_report import BASE_MODEL, ServedTrace
from llmops_dagster.stats import bootstrap_mean_difference

LOWER_IS_BETTER = frozenset({"latency_ms", "tokens", "thumbs_down"})


@dataclass(frozen=True)
class ArmComparison:
    metric: str
    challenger_n: int
    champion_n: int
    challenger_mean: float | None
    champion_mean: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _values(
    traces: Sequence[ServedTrace], metric: str, ratings: Mapping[str, set[str]]
) -> list[float]:
    if metric == "latency_ms":
        return [t.latency_ms for t in traces if t.latency_ms is not None]
    if metric == "tokens":
        return [float(t.prompt_tokens + t.completion_tokens) for t in traces]
    if metric == "cited":
        return [float(t.cited_count > 0) for t in traces]
    if metric == "thumbs_down":
        rated = [t for t in traces if ratings.get(t.trace_id)]
        return [float("down" in ratings[t.trace_id]) for t in rated]
    raise ValueError(f"unknown metric {metric!r}")


def compare_arms(
    traces: Sequence[ServedTrace],
    feedback: Sequence[tuple[str, str]],
    *,
    challenger: str,
    champion: str,
    n_resamples: int = 2000,
    seed: int = 13,
) -> tuple[list[ArmComparison], list[str]]:
    """One row per metric and the days compared (those both versions answered)."""
    ratings: dict[str, set[str]] = {}
    for trace_id, rating in feedback:
        ratings.setdefault(trace_id, set()).add(rating)

    def version(t: ServedTrace) -> str:
        return t.bundle_version or BASE_MODEL

    days = sorted(
        {t.day for t in traces if version(t) == challenger}
        & {t.day for t in traces if version(t) == champion}
    )
    arms = {
        name: [t for t in traces if version(t) == name and t.day in days]
        for name in (challenger, champion)
    }
    rows: list[ArmComparison] = []
    for metric in ("latency_ms", "tokens", "cited", "thumbs_down"):
        c = _values(arms[challenger], metric, ratings)
        b = _values(arms[champion], metric, ratings)
        higher = metric not in LOWER_IS_BETTER
        if not c or not b:
            rows.append(ArmComparison(metric, len(c), len(b), None, None, None, None, None, higher))
            continue
        diff, low, high = bootstrap_mean_difference(c, b, n_resamples=n_resamples, seed=seed)
        rows.append(
            ArmComparison(
                metric, len(c), len(b), sum(c) / len(c), sum(b) / len(b), diff, low, high, higher
            )
        )
    return rows, days
