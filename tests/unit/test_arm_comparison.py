"""Challenger vs champion on served answers: the days both answered, unpaired intervals."""

from __future__ import annotations

import pytest

from llmops_dagster.serving.arm_comparison import compare_arms
from llmops_dagster.serving.daily_report import ServedTrace
from llmops_dagster.stats import bootstrap_mean_difference

pytestmark = pytest.mark.unit


def _t(n: int, day: str, version: str, ms: float, cited: int = 1) -> ServedTrace:
    completion = 10 if version == "4" else 20
    return ServedTrace(f"{version}-{day}-{n}", day, version, ms, 100, completion, cited_count=cited)


TRACES = [
    *[_t(n, "2026-12-05", "3", 500.0) for n in range(4)],  # only the champion answered
    *[_t(n, "2026-12-06", "3", 400.0 + n, cited=n % 2) for n in range(6)],
    *[_t(n, "2026-12-06", "4", 300.0 + n) for n in range(3)],
]


def test_only_days_both_answered_are_compared_with_exact_means() -> None:
    feedback = [("3-2026-12-06-0", "down"), ("3-2026-12-06-1", "up"), ("4-2026-12-06-0", "up")]
    rows, days = compare_arms(TRACES, feedback, challenger="4", champion="3", n_resamples=500)
    assert days == ["2026-12-06"]
    by = {r.metric: r for r in rows}
    latency = by["latency_ms"]
    assert (latency.challenger_n, latency.champion_n) == (3, 6)
    assert (latency.challenger_mean, latency.champion_mean, latency.diff) == (301.0, 402.5, -101.5)
    assert latency.ci_low <= -101.5 <= latency.ci_high and latency.ci_high < 0
    assert latency.higher_is_better is False
    assert (by["tokens"].challenger_mean, by["tokens"].champion_mean) == (110.0, 120.0)
    assert (by["cited"].challenger_mean, by["cited"].champion_mean) == (1.0, 0.5)
    down = by["thumbs_down"]
    assert (down.challenger_n, down.champion_n, down.diff) == (1, 2, -0.5)


def test_a_metric_one_side_never_measured_has_no_interval() -> None:
    rows, _ = compare_arms(TRACES, [], challenger="4", champion="3", n_resamples=200)
    down = {r.metric: r for r in rows}["thumbs_down"]
    assert (down.challenger_n, down.champion_n, down.diff, down.ci_low) == (0, 0, None, None)


def test_the_unpaired_interval_is_deterministic_and_contains_the_difference() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.5]
    first = bootstrap_mean_difference(a, b, n_resamples=1000, seed=7)
    assert first == bootstrap_mean_difference(a, b, n_resamples=1000, seed=7)
    diff, low, high = first
    assert diff == pytest.approx(2.5 - 13 / 6)
    assert low <= diff <= high
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean_difference([], b)
