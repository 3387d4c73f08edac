"""Paired comparison: alignment, None handling, bootstrap interval, orientation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops_dagster.evaluate.compare import (
    MetricComparison,
    compare_runs,
    paired_bootstrap,
    paired_scores,
)

pytestmark = pytest.mark.unit


def rows(scores: dict[str, float | None], metric: str = "token_f1") -> list[dict]:
    return [{"case_id": cid, metric: value} for cid, value in scores.items()]


def test_identical_runs_diff_zero_and_collapsed_interval() -> None:
    base = rows({f"c{i}": i / 10 for i in range(10)})
    (comp,) = compare_runs(base, base, ["token_f1"])
    assert (comp.diff, comp.ci_low, comp.ci_high) == (0.0, 0.0, 0.0)
    assert comp.n == 10 and comp.candidate_mean == comp.baseline_mean


def test_constant_shift_collapses_to_the_shift() -> None:
    base = [0.1, 0.3, 0.25, 0.7, 0.05]
    diff, low, high = paired_bootstrap([b + 0.1 for b in base], base)
    assert diff == pytest.approx(0.1)
    assert low == diff == high


def test_small_example_mean_diff_by_hand() -> None:
    cand = rows({"a": 0.5, "b": 0.2, "c": 0.9})
    base = rows({"a": 0.3, "b": 0.4, "c": 0.6})
    (comp,) = compare_runs(cand, base, ["token_f1"])
    # differences 0.2, -0.2, 0.3 → mean 0.3 / 3 = 0.1
    assert comp.diff == pytest.approx(0.1)
    assert comp.candidate_mean == pytest.approx(1.6 / 3)
    assert comp.baseline_mean == pytest.approx(1.3 / 3)
    assert comp.ci_low <= comp.diff <= comp.ci_high
    # bootstrap means of 3 differences lie within [min, max] of the differences
    assert comp.ci_low >= -0.2 - 1e-12 and comp.ci_high <= 0.3 + 1e-12


def test_bootstrap_matches_reference_resampling() -> None:
    rng = np.random.default_rng(1)
    c, b = rng.random(25), rng.random(25)
    diff, low, high = paired_bootstrap(c, b, n_resamples=500, seed=7)
    d = c - b
    idx = np.random.default_rng(7).integers(0, 25, size=(500, 25))
    ref_low, ref_high = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    assert diff == pytest.approx(d.mean())
    assert (low, high) == pytest.approx((ref_low, ref_high))


def test_deterministic_with_seed() -> None:
    rng = np.random.default_rng(2)
    c, b = rng.random(60), rng.random(60)
    assert paired_bootstrap(c, b, seed=5) == paired_bootstrap(c, b, seed=5)
    assert paired_bootstrap(c, b, seed=5) != paired_bootstrap(c, b, seed=6)


def test_interval_shrinks_as_cases_grow() -> None:
    def width(n: int) -> float:
        rng = np.random.default_rng(3)
        base = rng.random(n)
        cand = base + rng.normal(0.05, 0.3, n)
        _, low, high = paired_bootstrap(cand, base)
        return high - low

    assert width(400) < width(40) / 2


def test_none_counts_as_zero() -> None:
    cand = rows({"a": None, "b": 0.8})
    base = rows({"a": 0.6, "b": 0.8})
    c, b = paired_scores(cand, base, "token_f1")
    assert c.tolist() == [0.0, 0.8] and b.tolist() == [0.6, 0.8]
    (comp,) = compare_runs(cand, base, ["token_f1"])
    assert comp.diff == pytest.approx(-0.3)


def test_missing_key_counts_as_zero() -> None:
    c, b = paired_scores([{"case_id": "a"}], rows({"a": 0.4}), "token_f1")
    assert c.tolist() == [0.0] and b.tolist() == [0.4]


def test_aligned_by_case_id_not_order() -> None:
    cand = rows({"b": 0.2, "a": 0.9})
    base = rows({"a": 0.1, "b": 0.2})
    c, b = paired_scores(cand, base, "token_f1")
    assert c.tolist() == [0.9, 0.2] and b.tolist() == [0.1, 0.2]


def test_mismatched_case_ids_raise_naming_them() -> None:
    with pytest.raises(ValueError, match=r"only in candidate \['x'\].*only in baseline \['y'\]"):
        paired_scores(rows({"a": 1.0, "x": 1.0}), rows({"a": 1.0, "y": 1.0}), "token_f1")


def test_duplicate_case_id_raises() -> None:
    with pytest.raises(ValueError, match="more than once"):
        paired_scores(rows({"a": 1.0}) * 2, rows({"a": 1.0}), "token_f1")


def test_no_cases_raises() -> None:
    with pytest.raises(ValueError, match="n=0"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="n=0"):
        compare_runs([], [], ["token_f1"])


def test_latency_is_lower_is_better_and_none_is_worst() -> None:
    cand = rows({"a": 100.0, "b": None, "c": 80.0}, "latency_ms")
    base = rows({"a": 200.0, "b": 150.0, "c": 120.0}, "latency_ms")
    c, b = paired_scores(cand, base, "latency_ms", higher_is_better=False)
    assert c.tolist() == [100.0, 200.0, 80.0]  # a failed case never looks fast
    assert b.tolist() == [200.0, 150.0, 120.0]
    (comp,) = compare_runs(cand, base, ["latency_ms"])
    assert not comp.higher_is_better
    assert comp.diff == pytest.approx((-100 + 50 - 40) / 3)
    gain, low, high = comp.improvement()
    assert gain == pytest.approx(-comp.diff) and low == -comp.ci_high and high == -comp.ci_low


def test_compare_runs_keeps_metric_order() -> None:
    cand = [{"case_id": "a", "token_f1": 0.5, "recall_at_5": 1.0}]
    base = [{"case_id": "a", "token_f1": 0.4, "recall_at_5": 1.0}]
    comps = compare_runs(cand, base, ["recall_at_5", "token_f1"])
    assert [c.metric for c in comps] == ["recall_at_5", "token_f1"]
    assert comps[1].diff == pytest.approx(0.1)


def test_as_row_and_describe() -> None:
    comp = MetricComparison("token_f1", 150, 0.412345, 0.381111, 0.031234, -0.00412, 0.06618)
    assert comp.as_row() == {
        "metric": "token_f1",
        "n": 150,
        "candidate_mean": 0.4123,
        "baseline_mean": 0.3811,
        "diff": 0.0312,
        "ci_low": -0.0041,
        "ci_high": 0.0662,
        "higher_is_better": True,
    }
    assert comp.describe() == "token_f1: +0.031 [−0.004, +0.066] (n=150)"
    slow = MetricComparison("latency_ms", 3, 90.0, 100.0, -10.0, -20.0, -1.0, False)
    assert slow.describe().endswith("(lower is better)")


def test_invalid_bootstrap_arguments() -> None:
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0, 0.0], [0.0, 0.0], confidence=1.0)
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([float("nan"), 0.0], [0.0, 0.0])


pairs = st.lists(
    st.tuples(
        st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False),
        st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, database=None)
@given(pairs, st.integers(0, 2**32 - 1), st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_property_interval_contains_diff(
    data: list[tuple[float, float]], seed: int, confidence: float
) -> None:
    cand, base = zip(*data, strict=True)
    diff, low, high = paired_bootstrap(
        cand, base, n_resamples=200, confidence=confidence, seed=seed
    )
    assert low <= diff <= high
    assert min(c - b for c, b in data) - 1e-9 <= low
    assert high <= max(c - b for c, b in data) + 1e-9
