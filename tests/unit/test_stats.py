"""llmops_dagster.stats: one percentile definition (nearest-rank), the same number wherever a
p50/p95 is computed: the serving report, the evaluation's latency, the search load test."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops_dagster.evaluate.metrics import TokenF1
from llmops_dagster.evaluate.run import EvalCase, evaluate_rag
from llmops_dagster.search.load import LoadReport
from llmops_dagster.serving.daily_report import ServedTrace, serving_report
from llmops_dagster.stats import percentile

pytestmark = pytest.mark.unit

ONE_TO_TWENTY = [float(v) for v in range(1, 21)]


def test_percentile_is_nearest_rank() -> None:
    assert percentile(ONE_TO_TWENTY, 50) == 10.0
    assert percentile(ONE_TO_TWENTY, 95) == 19.0  # numpy's default would say 19.05
    assert percentile(ONE_TO_TWENTY, 100) == 20.0
    assert percentile(reversed(ONE_TO_TWENTY), 5) == 1.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\]"):
            percentile(ONE_TO_TWENTY, bad)


def test_a_rank_a_hair_above_an_integer_is_that_integer() -> None:
    # 0.07 · 100 = 7.000000000000001 in floating point: still the 7th value, not the 8th.
    assert percentile(range(1, 101), 7) == 7.0


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=60),
    p=st.sampled_from([1, 5, 25, 50, 75, 90, 95, 99, 100]),
)
def test_percentile_is_numpys_inverted_cdf_and_always_an_observed_value(
    values: list[float], p: int
) -> None:
    found = percentile(values, p)
    assert found == float(np.percentile(values, p, method="inverted_cdf"))
    assert found in values


def test_every_p95_in_the_product_is_this_one() -> None:
    """The serving report, the evaluation aggregates and the search load test, fed the same
    latencies 1..20 ms, all report p95 = 19 and p50 = 10."""
    traces = [
        ServedTrace(trace_id=f"t{i}", day="2026-12-01", bundle_version="3", latency_ms=ms)
        for i, ms in enumerate(ONE_TO_TWENTY)
    ]
    day = serving_report(traces, []).latest
    assert day is not None and (day.p50_latency_ms, day.p95_latency_ms) == (10.0, 19.0)

    load = LoadReport(clients=1, seconds=1.0, latencies_ms=list(ONE_TO_TWENTY))
    assert (load.summary()["p50_ms"], load.summary()["p95_ms"]) == (10.0, 19.0)
    assert LoadReport(clients=1, seconds=1.0).percentile(95) == 0.0

    cases = [
        EvalCase(f"q{i}", "q?", "a", "a", ["t"], ["d"], ["d"], latency_ms=ms)
        for i, ms in enumerate(ONE_TO_TWENTY)
    ]
    result = evaluate_rag(cases, metrics=[TokenF1()], engine="direct")
    assert result.aggregates["latency_ms_p95"] == 19.0
