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


# --------------------------------------------------------------------------------------------
# Per-metric case counts, error rates, the baseline version
# --------------------------------------------------------------------------------------------


def _judged_rows(
    score: float, judged: int, total: int = 30, *, errors: int = 0
) -> list[dict[str, object]]:
    """``total`` cases with deterministic metrics on all, faithfulness on the first ``judged``
    (None after: not in the judge sample); the first ``errors`` judged cases errored (0.0)."""
    out: list[dict[str, object]] = []
    for i in range(total):
        row: dict[str, object] = {
            "case_id": f"c{i:02d}",
            "token_f1": 0.25 + (i % 5) / 20 + score,
            "recall_at_5": 1.0,
            "ndcg_at_10": 0.9,
            "mrr_at_10": 1.0,
            "faithfulness": (0.0 if i < errors else score) if i < judged else None,
            "faithfulness_error": "JudgeOutputError: empty 'claims' list" if i < errors else None,
        }
        out.append(row)
    return out


def _eval_result(rows: list[dict[str, object]], judged: int) -> object:
    from llmops_dagster.evaluate.run import EvalResult

    return EvalResult(
        rows=rows,
        aggregates={**GOOD, "faithfulness": 0.9},
        metric_keys=["token_f1", "recall_at_5", "ndcg_at_10", "mrr_at_10"],
        judge_metric_keys=["faithfulness"],
        judge="capable-judge",
        judge_gates=True,
        judge_cases=judged,
        errors={},
        seconds=1.0,
        engine="deepeval",
    )


def _compare_and_decide(policy: PromotionPolicy, cand: list, base: list, judged: int = 3):
    """Through ``bundle_eval.compare_and_decide`` (compared_metrics included); the bundles
    are not read on this path."""
    from llmops_dagster.evaluate.bundle_eval import BundleEvaluation, compare_and_decide

    candidate = BundleEvaluation("candidate", None, _eval_result(cand, judged))  # type: ignore[arg-type]
    baseline = BundleEvaluation(BASE, None, _eval_result(base, judged))  # type: ignore[arg-type]
    return compare_and_decide(candidate, baseline, policy, n_resamples=200, baseline_version="3")


def test_a_judge_metric_on_3_of_30_cases_is_compared_and_refused_on_its_own_count() -> None:
    policy = PromotionPolicy(guards={**DEFAULT_GUARDS, "faithfulness": 0.05}, judge_capable=True)
    comparisons, decision = _compare_and_decide(
        policy, _judged_rows(0.125, judged=3), _judged_rows(0.0, judged=3)
    )
    by_metric = {c.metric: c for c in comparisons}
    assert by_metric["faithfulness"].n == 3 and by_metric["token_f1"].n == 30
    assert decision.outcome == "refused"
    assert decision.reasons == (
        "too few cases for faithfulness compared on 3 < 30 paired cases (min_cases)",
    )
    allowed = PromotionPolicy(guards=dict(policy.guards), judge_capable=True, allow_few_cases=True)
    _, decision = _compare_and_decide(
        allowed, _judged_rows(0.125, judged=3), _judged_rows(0.0, judged=3)
    )
    assert decision.outcome == "champion"
    assert decision.overrides == ("allow_few_cases: faithfulness compared on 3 < 30 paired cases",)
    assert decision.baseline_version == "3"


def test_a_judge_metric_the_policy_does_not_read_does_not_refuse() -> None:
    policy = PromotionPolicy(judge_capable=True)  # faithfulness compared, but not read
    _, decision = _compare_and_decide(
        policy, _judged_rows(0.125, judged=3), _judged_rows(0.0, judged=3)
    )
    assert decision.outcome == "champion", decision.reasons


def test_a_read_metric_compared_on_no_case_refuses_even_with_allow_few_cases() -> None:
    policy = PromotionPolicy(primary="faithfulness", allow_few_cases=True, judge_capable=True)
    never = comp("faithfulness", 0.0, 0.0, 0.0, n=0)
    decision = run(policy, comparisons=[never, *held_guards()])
    assert decision.outcome == "refused"
    assert decision.reasons == (
        "faithfulness was not compared: no case scored on both sides (n=0)",
    )


def test_a_baseline_that_errors_too_often_refuses_the_decision() -> None:
    """4 of 30 baseline cases errored (scored 0): the candidate would win on them."""
    policy = PromotionPolicy(guards={**DEFAULT_GUARDS, "faithfulness": 0.05}, judge_capable=True)
    comparisons, decision = _compare_and_decide(
        policy, _judged_rows(0.5, judged=30), _judged_rows(0.5, judged=30, errors=4), judged=30
    )
    (faith,) = [c for c in comparisons if c.metric == "faithfulness"]
    assert (faith.n, faith.candidate_errors, faith.baseline_errors) == (30, 0, 4)
    assert faith.as_row()["baseline_errors"] == 4
    assert decision.outcome == "refused"
    assert decision.reasons == (
        "baseline (champion v3) errored on faithfulness: 4/30 cases = 13.3% > max_error_rate 5.0%",
    )


def test_a_candidate_that_errors_too_often_refuses_the_decision() -> None:
    policy = PromotionPolicy(judge_capable=True)  # any compared metric counts, read or not
    _, decision = _compare_and_decide(
        policy, _judged_rows(0.6, judged=30, errors=2), _judged_rows(0.5, judged=30), judged=30
    )
    assert decision.outcome == "refused"
    assert decision.reasons == (
        "candidate errored on faithfulness: 2/30 cases = 6.7% > max_error_rate 5.0%",
    )
    lenient = PromotionPolicy(judge_capable=True, max_error_rate=0.1)
    _, decision = _compare_and_decide(
        lenient, _judged_rows(0.6, judged=30, errors=2), _judged_rows(0.5, judged=30), judged=30
    )
    assert decision.outcome == "champion", decision.reasons


def test_error_rate_at_the_limit_passes() -> None:
    exactly = MetricComparison("token_f1", 40, 0.55, 0.5, 0.05, 0.01, 0.09, True, 2, 2)
    decision = run(comparisons=[exactly, *held_guards()])  # 2/40 = 5 % is not above 5 %
    assert decision.outcome == "champion"


def test_max_error_rate_config() -> None:
    assert PromotionPolicy().max_error_rate == 0.05
    assert PromotionPolicy.from_mapping({"max_error_rate": "0.1"}).max_error_rate == 0.1
    assert PromotionPolicy().as_params()["policy.max_error_rate"] == "0.05"
    with pytest.raises(ValueError, match=r"max_error_rate is a fraction of cases in \[0, 1\]"):
        PromotionPolicy(max_error_rate=1.5)


def test_decision_records_the_baseline_version() -> None:
    decision = run(baseline_version="7")
    assert decision.baseline_version == "7" and decision.to_dict()["baseline_version"] == "7"
    assert decision.summary().startswith("champion (vs champion v3, baseline version 7): ")
    base_model = run()
    assert base_model.baseline_version is None
    assert base_model.to_dict()["baseline_version"] is None


# --------------------------------------------------------------------------------------------
# Cost: tokens per answer
# --------------------------------------------------------------------------------------------


def _with_tokens(rows: list[dict[str, object]], tokens: int | None) -> list[dict[str, object]]:
    return [{**row, "tokens": tokens} for row in rows]


def test_a_better_candidate_spending_twice_the_tokens_is_held_back_as_challenger() -> None:
    comparisons, decision = _compare_and_decide(
        PromotionPolicy(),
        _with_tokens(_judged_rows(0.125, judged=0), 1200),
        _with_tokens(_judged_rows(0.0, judged=0), 600),
    )
    by_metric = {c.metric: c for c in comparisons}
    tokens = by_metric["tokens"]
    assert (tokens.n, tokens.candidate_mean, tokens.baseline_mean, tokens.diff) == (
        30,
        1200.0,
        600.0,
        600.0,
    )
    assert tokens.higher_is_better is False
    assert decision.outcome == "challenger"
    assert decision.reasons[-1] == (
        "cost: 1200 vs 600 tokens per answer = 2.00x champion v3 exceeds max_cost_ratio 1.5"
    )


def test_the_same_candidate_within_the_cost_ratio_is_promoted() -> None:
    _, decision = _compare_and_decide(
        PromotionPolicy(),
        _with_tokens(_judged_rows(0.125, judged=0), 900),
        _with_tokens(_judged_rows(0.0, judged=0), 600),
    )
    assert decision.outcome == "champion"
    assert decision.reasons[-1] == (
        "cost held: 900 vs 600 tokens per answer = 1.50x champion v3 (max_cost_ratio 1.5)"
    )


def test_a_model_candidate_against_a_champion_that_spends_no_tokens_is_held_back() -> None:
    _, decision = _compare_and_decide(
        PromotionPolicy(),
        _with_tokens(_judged_rows(0.125, judged=0), 500),
        _with_tokens(_judged_rows(0.0, judged=0), 0),
    )
    assert decision.outcome == "challenger"
    assert decision.reasons[-1] == (
        "cost: 500 tokens per answer where champion v3 spends none exceeds max_cost_ratio 1.5"
    )


def test_without_a_cost_rule_or_without_tokens_only_quality_decides() -> None:
    _, no_rule = _compare_and_decide(
        PromotionPolicy(max_cost_ratio=None),
        _with_tokens(_judged_rows(0.125, judged=0), 1200),
        _with_tokens(_judged_rows(0.0, judged=0), 600),
    )
    assert no_rule.outcome == "champion"
    assert not any(r.startswith("cost") for r in no_rule.reasons)
    comparisons, unknown = _compare_and_decide(
        PromotionPolicy(),
        _with_tokens(_judged_rows(0.125, judged=0), 1200),
        _with_tokens(_judged_rows(0.0, judged=0), None),  # answers recorded before tokens were
    )
    assert "tokens" not in {c.metric for c in comparisons}
    assert unknown.outcome == "champion"
    assert unknown.reasons[-1] == "cost: tokens per answer not known on both sides (not checked)"


@pytest.mark.parametrize("ratio", [0, -1.0])
def test_a_cost_ratio_that_is_not_positive_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"max_cost_ratio .* must be > 0"):
        PromotionPolicy.from_mapping({"max_cost_ratio": ratio})
    assert PromotionPolicy.from_mapping({"max_cost_ratio": None}).max_cost_ratio is None
    assert PromotionPolicy().as_params()["policy.max_cost_ratio"] == "1.5"
