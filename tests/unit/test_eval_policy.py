"""Promotion policy: refusals, floors, paired comparison, guards, approval, overrides."""

from __future__ import annotations

import json

import pytest

from llmops_dagster.evaluate.compare import MetricComparison, compare_runs
from llmops_dagster.evaluate.policy import DEFAULT_GUARDS, Decision, PromotionPolicy, decide

pytestmark = pytest.mark.unit

GOOD = {"recall_at_5": 0.9, "ndcg_at_10": 0.8, "token_f1": 0.3}
BASE = "champion v3"


def comp(
    metric: str, diff: float, low: float, high: float, *, higher: bool = True, n: int = 40
) -> MetricComparison:
    return MetricComparison(metric, n, 0.5 + diff, 0.5, diff, low, high, higher)


def held_guards() -> list[MetricComparison]:
    return [comp(m, 0.0, -0.01, 0.01) for m in ("recall_at_5", "ndcg_at_10", "mrr_at_10")]


BETTER = [comp("token_f1", 0.05, 0.01, 0.09), *held_guards()]


def run(policy: PromotionPolicy | None = None, **kwargs: object) -> Decision:
    args: dict[str, object] = {
        "n_cases": 40,
        "aggregates": GOOD,
        "comparisons": BETTER,
        "baseline_label": BASE,
    }
    args.update(kwargs)
    return decide(policy or PromotionPolicy(), **args)  # type: ignore[arg-type]


def test_better_candidate_becomes_champion() -> None:
    decision = run()
    assert decision.outcome == "champion" and decision.promotes and decision.passed_floors
    assert decision.overrides == ()
    assert "primary token_f1: +0.050 [+0.010, +0.090] (n=40) vs champion v3" in decision.reasons
    assert any(r.startswith("guard recall_at_5:") and "held" in r for r in decision.reasons)
    assert decision.summary().startswith("champion (vs champion v3): primary token_f1")


def test_manual_approval_waits() -> None:
    decision = run(PromotionPolicy(approval="manual"))
    assert decision.outcome == "awaiting_approval"
    assert not decision.promotes and decision.passed_floors


def test_no_thresholds_refused() -> None:
    decision = run(PromotionPolicy(minimums={}, maximums={}))
    assert decision.outcome == "refused" and not decision.passed_floors
    assert decision.reasons == ("no thresholds: a gate without thresholds passes anything",)


def test_no_thresholds_allowed_is_recorded() -> None:
    decision = run(PromotionPolicy(minimums={}, maximums={}, allow_no_thresholds=True))
    assert decision.outcome == "champion"
    assert decision.overrides == (
        "allow_no_thresholds: no thresholds: a gate without thresholds passes anything",
    )
    assert "overrides: allow_no_thresholds" in decision.summary()


def test_only_advisory_judge_thresholds_count_as_none() -> None:
    decision = run(PromotionPolicy(minimums={"faithfulness": 0.7}), aggregates={})
    assert decision.outcome == "refused"
    assert decision.reasons[0].startswith("no gating thresholds (judge-metric floors")


def test_too_few_cases_refused() -> None:
    decision = run(n_cases=12)
    assert decision.outcome == "refused"
    assert decision.reasons == ("too few cases: 12 < 30 cases (min_cases)",)


def test_too_few_cases_allowed_is_recorded() -> None:
    decision = run(PromotionPolicy(allow_few_cases=True), n_cases=12)
    assert decision.outcome == "champion"
    assert decision.overrides == ("allow_few_cases: 12 < 30 cases",)


def test_failed_floors_refused_with_gate_descriptions() -> None:
    decision = run(aggregates={"recall_at_5": 0.9, "token_f1": 0.01})
    assert decision.outcome == "refused" and not decision.passed_floors
    assert decision.reasons == (
        "floor failed: ndcg_at_10 = not measured, needs >= 0.5 (short by inf)",
        "floor failed: token_f1 = 0.0100, needs >= 0.05 (short by 0.0400)",
    )
    assert not decision.gate.passed


def test_refusals_are_all_reported_together() -> None:
    decision = run(n_cases=5, aggregates={**GOOD, "token_f1": 0.0})
    assert decision.outcome == "refused"
    assert decision.reasons[0] == "too few cases: 5 < 30 cases (min_cases)"
    assert decision.reasons[1].startswith("floor failed: token_f1 = 0.0000")


def test_primary_not_compared_refused() -> None:
    decision = run(comparisons=held_guards())
    assert decision.outcome == "refused" and decision.passed_floors
    assert decision.reasons == ("primary metric token_f1 was not compared",)


def test_floors_alone_never_promote_equal_candidate() -> None:
    rows = [
        {
            "case_id": f"c{i}",
            "token_f1": i / 40,
            "recall_at_5": 1.0,
            "ndcg_at_10": 0.9,
            "mrr_at_10": 1,
        }
        for i in range(40)
    ]
    comps = compare_runs(rows, rows, ["token_f1", "recall_at_5", "ndcg_at_10", "mrr_at_10"])
    decision = run(comparisons=comps)
    assert decision.passed_floors
    assert decision.outcome == "challenger" and not decision.promotes
    assert (
        "primary token_f1: +0.000 [+0.000, +0.000] (n=40): diff +0.0000 is no improvement over "
        "champion v3 (require_improvement)"
    ) in decision.reasons


def test_interval_crossing_zero_is_challenger() -> None:
    decision = run(comparisons=[comp("token_f1", 0.031, -0.004, 0.066), *held_guards()])
    assert decision.outcome == "challenger"
    assert decision.reasons[0] == (
        "primary token_f1: +0.031 [−0.004, +0.066] (n=40): interval low end -0.0040 is not "
        "above -0 (regression vs champion v3 not ruled out)"
    )


def test_non_inferiority_margin_without_improvement() -> None:
    comps = [comp("token_f1", -0.002, -0.008, 0.004), *held_guards()]
    lenient = PromotionPolicy(primary_margin=0.01, require_improvement=False)
    assert run(lenient, comparisons=comps).outcome == "champion"
    strict = PromotionPolicy(primary_margin=0.01)
    decision = run(strict, comparisons=comps)
    assert decision.outcome == "challenger"
    assert any("no improvement" in r and "-0.0020" in r for r in decision.reasons)
    too_far = [comp("token_f1", -0.002, -0.02, 0.004), *held_guards()]
    assert run(lenient, comparisons=too_far).outcome == "challenger"


def test_guard_regression_blocks() -> None:
    comps = [
        comp("token_f1", 0.05, 0.01, 0.09),
        comp("recall_at_5", -0.05, -0.08, -0.02),
        comp("ndcg_at_10", 0.0, -0.01, 0.01),
        comp("mrr_at_10", 0.0, -0.01, 0.01),
    ]
    decision = run(comparisons=comps)
    assert decision.outcome == "challenger" and decision.passed_floors
    assert (
        "guard recall_at_5: −0.050 [−0.080, −0.020] (n=40): interval low end -0.0800 is below "
        "-0.02 (may have regressed vs champion v3)"
    ) in decision.reasons


def test_missing_guard_is_reported_but_does_not_block() -> None:
    decision = run(comparisons=BETTER[:2])
    assert decision.outcome == "champion"
    assert "guard mrr_at_10 was not compared (not checked)" in decision.reasons
    assert "guard ndcg_at_10 was not compared (not checked)" in decision.reasons


def test_lower_is_better_guard_mirrors_sign() -> None:
    policy = PromotionPolicy(guards={"latency_ms": 50.0})
    slower = comp("latency_ms", 100.0, 60.0, 140.0, higher=False)
    decision = run(policy, comparisons=[BETTER[0], slower])
    assert decision.outcome == "challenger"
    assert any("guard latency_ms" in r and "-140.0000 is below -50" in r for r in decision.reasons)
    faster = comp("latency_ms", -100.0, -140.0, -60.0, higher=False)
    assert run(policy, comparisons=[BETTER[0], faster]).outcome == "champion"


def test_duplicate_comparison_raises() -> None:
    with pytest.raises(ValueError, match="more than once"):
        run(comparisons=[*BETTER, BETTER[0]])


def test_to_dict_is_json_ready() -> None:
    data = run(n_cases=3).to_dict()
    assert data["outcome"] == "refused" and data["promotes"] is False
    assert data["baseline"] == BASE
    assert data["comparisons"][0]["metric"] == "token_f1"
    assert data["gate"]["passed"] is True
    json.dumps(data)


def test_defaults_and_from_mapping() -> None:
    default = PromotionPolicy()
    assert dict(default.guards) == DEFAULT_GUARDS
    assert dict(default.minimums) == {"recall_at_5": 0.6, "ndcg_at_10": 0.5, "token_f1": 0.05}
    assert PromotionPolicy.from_mapping({}) == default
    policy = PromotionPolicy.from_mapping(
        {
            "primary": "rouge_l",
            "primary_margin": "0.01",
            "guards": {"recall_at_5": 0.05},
            "minimums": {"rouge_l": 0.1},
            "maximums": None,
            "min_cases": "50",
            "approval": "manual",
            "allow_few_cases": 1,
        }
    )
    assert policy.primary == "rouge_l" and policy.primary_margin == 0.01
    assert dict(policy.guards) == {"recall_at_5": 0.05}
    assert dict(policy.minimums) == {"rouge_l": 0.1} and dict(policy.maximums) == {}
    assert policy.min_cases == 50 and policy.approval == "manual" and policy.allow_few_cases


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"guard": {"mrr_at_10": 0.1}}, "unknown promotion policy keys"),
        ({"approval": "sometimes"}, "approval"),
        ({"primary_margin": -0.1}, "margins"),
        ({"guards": {"mrr_at_10": -0.1}}, "margins"),
        ({"min_cases": -1}, "min_cases"),
    ],
)
def test_from_mapping_rejects_bad_config(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PromotionPolicy.from_mapping(data)


def test_as_params_flat_strings() -> None:
    params = PromotionPolicy(approval="manual").as_params()
    assert params["policy.primary"] == "token_f1"
    assert params["policy.margin"] == "0.0"
    assert params["policy.guard.recall_at_5"] == "0.02"
    assert params["policy.guard.mrr_at_10"] == "0.02"
    assert params["policy.min_cases"] == "30"
    assert params["policy.approval"] == "manual"
    assert params["gate.min.token_f1"] == "0.05"
    assert params["gate.judge_capable"] == "false"
    assert all(isinstance(v, str) for v in params.values())


def test_end_to_end_shifted_candidate_promotes() -> None:
    base = [
        {"case_id": f"c{i}", "token_f1": 0.25 + (i % 5) / 20, "recall_at_5": 1.0} for i in range(30)
    ]
    cand = [{**row, "token_f1": row["token_f1"] + 0.125} for row in base]
    comps = compare_runs(cand, base, ["token_f1", "recall_at_5"])
    decision = run(n_cases=30, comparisons=comps)
    assert decision.outcome == "champion"
    assert decision.reasons[0] == "primary token_f1: +0.125 [+0.125, +0.125] (n=30) vs champion v3"
