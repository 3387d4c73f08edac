"""Paired comparison: alignment, per-metric pairing (None = not measured, errors = 0 and
counted), bootstrap interval, orientation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops_dagster.evaluate.compare import MetricComparison, compare_runs, paired_scores
from llmops_dagster.stats import paired_bootstrap

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


def test_a_case_not_scored_on_either_side_is_left_out_of_that_metric() -> None:
    """None/NaN = not measured (e.g. not in the judge sample): the case is not paired. The old
    rule scored it 0 on that side, so 3 judged cases were compared with n = all cases."""
    cand = rows({"a": None, "b": 0.8, "c": 0.5, "d": float("nan")})
    base = rows({"a": 0.6, "b": 0.4, "c": None, "d": 0.2})
    c, b = paired_scores(cand, base, "token_f1")
    assert c.tolist() == [0.8] and b.tolist() == [0.4]
    (comp,) = compare_runs(cand, base, ["token_f1"])
    assert comp.n == 1 and comp.diff == pytest.approx(0.4)


def test_a_missing_column_is_not_measured() -> None:
    c, b = paired_scores([{"case_id": "a"}], rows({"a": 0.4}), "token_f1")
    assert c.tolist() == [] and b.tolist() == []


def test_judge_metric_on_3_of_30_cases_is_compared_with_n_3() -> None:
    judged = {f"c{i:02d}": (0.9 if i < 3 else None) for i in range(30)}
    base_judged = {f"c{i:02d}": (0.6 if i < 3 else None) for i in range(30)}
    cand = [{**r, "token_f1": 0.5} for r in rows(judged, "faithfulness")]
    base = [{**r, "token_f1": 0.5} for r in rows(base_judged, "faithfulness")]
    faith, f1 = compare_runs(cand, base, ["faithfulness", "token_f1"])
    assert (faith.n, f1.n) == (3, 30)
    # The old code compared 30 cases with 27 zeros on both sides: diff 0.03 instead of 0.3.
    assert faith.diff == pytest.approx(0.3) and faith.candidate_mean == pytest.approx(0.9)


def test_errors_stay_in_as_zero_and_are_counted_per_side() -> None:
    """An error is a 0.0 score with the text in ``<metric>_error``: never dropped (it must not
    help a candidate), and counted on its side among the paired cases."""
    cand = rows({"a": 0.0, "b": 0.8, "c": 0.7})
    cand[0]["token_f1_error"] = "JudgeOutputError: empty 'verdicts' list"
    base = rows({"a": 0.6, "b": 0.0, "c": 0.0})
    base[1]["token_f1_error"] = "TimeoutError"
    base[2]["token_f1_error"] = "TimeoutError"
    (comp,) = compare_runs(cand, base, ["token_f1"])
    assert comp.n == 3 and (comp.candidate_errors, comp.baseline_errors) == (1, 2)
    assert comp.diff == pytest.approx((-0.6 + 0.8 + 0.7) / 3)
    assert comp.error_rate("baseline") == pytest.approx(2 / 3)
    assert comp.as_row()["baseline_errors"] == 2


def test_rows_read_back_from_mlflow_with_nan_mean_not_measured_and_no_error() -> None:
    nan = float("nan")
    recorded = [
        {"case_id": "a", "faithfulness": 1.0, "faithfulness_error": nan},
        {"case_id": "b", "faithfulness": nan, "faithfulness_error": nan},
        {"case_id": "c", "faithfulness": 0.0, "faithfulness_error": "JudgeError: down"},
    ]
    now = [{"case_id": i, "faithfulness": 0.5} for i in "abc"]
    (comp,) = compare_runs(now, recorded, ["faithfulness"])
    assert comp.n == 2 and comp.baseline_errors == 1 and comp.candidate_errors == 0


def test_a_metric_no_case_scored_on_both_sides_has_n_0_and_nan_statistics() -> None:
    (comp,) = compare_runs(rows({"a": None}), rows({"a": 0.5}), ["token_f1"])
    assert comp.n == 0 and math.isnan(comp.diff) and math.isnan(comp.ci_low)
    assert comp.as_row()["diff"] is None  # valid JSON
    assert comp.describe() == "token_f1: not compared (n=0: no case scored on both sides)"


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


def test_latency_is_lower_is_better() -> None:
    cand = rows({"a": 100.0, "b": None, "c": 80.0}, "latency_ms")
    base = rows({"a": 200.0, "b": 150.0, "c": 120.0}, "latency_ms")
    c, b = paired_scores(cand, base, "latency_ms")
    assert c.tolist() == [100.0, 80.0] and b.tolist() == [200.0, 120.0]
    (comp,) = compare_runs(cand, base, ["latency_ms"])
    assert not comp.higher_is_better and comp.n == 2
    assert comp.diff == pytest.approx((-100 - 40) / 2)
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
        "candidate_errors": 0,
        "baseline_errors": 0,
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
