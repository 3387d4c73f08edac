"""Gate logic: thresholds, shortfalls, unmeasured metrics, judge metrics only when capable."""

from __future__ import annotations

import pytest

from llmops_dagster.evaluate.gate import GateConfig, evaluate_gate

pytestmark = pytest.mark.unit

CONFIG = GateConfig(
    minimums={"recall_at_5": 0.8, "ndcg_at_10": 0.6, "token_f1": 0.2, "faithfulness": 0.7},
    maximums={"latency_ms_p95": 2000.0},
)


def test_all_thresholds_met_passes() -> None:
    result = evaluate_gate(
        {
            "recall_at_5": 0.9,
            "ndcg_at_10": 0.6,
            "token_f1": 0.5,
            "latency_ms_p95": 1500.0,
            "faithfulness": 0.1,
        },
        CONFIG,
    )
    assert result.passed and result.failures == ()
    # the judge metric missed but the judge is not capable: advisory only
    assert [f.metric for f in result.advisory] == ["faithfulness"]
    assert "faithfulness" not in result.checked and "recall_at_5" in result.checked


def test_failures_list_metric_value_threshold_shortfall() -> None:
    result = evaluate_gate(
        {"recall_at_5": 0.5, "ndcg_at_10": 0.7, "token_f1": 0.15, "latency_ms_p95": 2600.0},
        CONFIG,
    )
    assert not result.passed
    failures = {f.metric: f for f in result.failures}
    assert set(failures) == {"recall_at_5", "token_f1", "latency_ms_p95"}
    assert failures["recall_at_5"].shortfall == pytest.approx(0.3)
    assert failures["token_f1"].value == 0.15 and failures["token_f1"].threshold == 0.2
    assert failures["latency_ms_p95"].direction == "<=" and failures[
        "latency_ms_p95"
    ].shortfall == pytest.approx(600.0)
    assert "recall_at_5 = 0.5000, needs >= 0.8 (short by 0.3000)" in result.summary()


def test_unmeasured_metric_fails() -> None:
    result = evaluate_gate({"recall_at_5": 0.9, "ndcg_at_10": 0.9, "latency_ms_p95": 1.0}, CONFIG)
    assert not result.passed
    (failure,) = result.failures
    assert (
        failure.metric == "token_f1" and failure.value is None and failure.shortfall == float("inf")
    )


def test_judge_metrics_gate_when_capable() -> None:
    capable = GateConfig(
        minimums={"faithfulness": 0.7, "geval_correctness": 0.5}, judge_capable=True
    )
    result = evaluate_gate({"faithfulness": 0.5, "geval_correctness": 0.9}, capable)
    assert not result.passed and [f.metric for f in result.failures] == ["faithfulness"]
    not_capable = GateConfig(minimums=capable.minimums, judge_capable=False)
    assert evaluate_gate({"faithfulness": 0.5}, not_capable).passed


def test_config_from_mapping_and_params() -> None:
    config = GateConfig.from_mapping({"minimums": {"mrr": "0.4"}, "judge_capable": True})
    assert config.minimums == {"mrr": 0.4} and config.judge_capable
    assert config.as_params() == {"gate.min.mrr": "0.4", "gate.judge_capable": "true"}
