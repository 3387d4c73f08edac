"""The candidate evaluation as library code: run config → request and policy, both sides
answered and decided, the champion checked against its scores at promotion, and the numbers
the asset and its checks publish."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from assets.evaluate import EvaluationConfig, comparison_numbers
from llmops_dagster.evaluate.candidate import (
    CandidateError,
    CandidateRequest,
    ChampionRegression,
    Sides,
    evaluate_candidate,
    judge_spec_for_run,
)
from llmops_dagster.evaluate.golden import GoldenSet
from llmops_dagster.evaluate.metrics import TokenF1
from llmops_dagster.evaluate.policy import PromotionPolicy
from llmops_dagster.models.spec import GeneratorPin, JudgeSpec, OpenAIEndpointSpec
from llmops_dagster.qa import QAItem
from llmops_dagster.rag.bundle import BundleVersion, RagBundle
from tests.support.stubs import StubAnswer, hit, rag_bundle

pytestmark = pytest.mark.unit


# --- run config → policy and request --------------------------------------------------------
def test_evaluation_config_has_every_policy_field_with_the_policys_default() -> None:
    """One source of truth: the run config's policy keys are the policy's fields, and their
    defaults are the policy's (``judge_capable`` is the run's judge override, None = unset)."""
    config, policy = EvaluationConfig(), PromotionPolicy()
    names = set(PromotionPolicy.field_names()) - {"judge_capable"}
    assert names <= set(EvaluationConfig.model_fields)
    assert {n: getattr(config, n) for n in names} == {
        n: dict(v) if isinstance(v := getattr(policy, n), dict) else v for n in names
    }
    assert PromotionPolicy.from_run_config(config.model_dump(), judge_capable=False) == policy


def test_policy_from_run_config_maps_the_keys_users_and_sensors_send_by_name() -> None:
    chosen = {
        "approval": "manual",
        "require_improvement": False,
        "primary_margin": 0.01,
        "allow_few_cases": True,
        "minimums": {"recall_at_5": 0.7},
        "guards": {"ndcg_at_10": 0.05},
    }
    # k: a candidate key, not the policy's; judge_capable: the run's judge override (the
    # policy takes the judge actually used).
    config = EvaluationConfig(**chosen, k=5, judge_capable=False)
    policy = PromotionPolicy.from_run_config(config.model_dump(), judge_capable=True)
    assert policy == PromotionPolicy(**chosen, judge_capable=True)


def test_a_bad_policy_value_in_the_run_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="approval must be 'auto' or 'manual', got 'later'"):
        PromotionPolicy.from_run_config({"approval": "later"}, judge_capable=False)


def test_candidate_request_takes_the_candidate_keys_of_the_run_config() -> None:
    request = CandidateRequest.from_config(
        EvaluationConfig(generator="extractive", mode="bm25", k=4).model_dump()
    )
    assert request == CandidateRequest("extractive", None, "bm25", 4, 10, 26)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"mode": "hybrid"},
            "mode must be one of ['bm25', 'knn', 'hybrid_rrf', 'hybrid_linear', 'server_rrf'], "
            "got 'hybrid'",
        ),
        ({"generator": "gpt"}, "generator must be 'llm' or 'extractive', got 'gpt'"),
        ({"k": 0}, "k must be >= 1, got 0"),
    ],
)
def test_a_bad_candidate_setting_is_refused_naming_it(change: dict, message: str) -> None:
    with pytest.raises(CandidateError) as refused:
        CandidateRequest.from_config({**EvaluationConfig().model_dump(), **change})
    assert str(refused.value) == message


def test_the_run_may_switch_the_judge_but_keeps_the_configured_endpoint() -> None:
    endpoint = OpenAIEndpointSpec(base_url="http://judge.test/v1", model="judge-model")
    configured = JudgeSpec(kind="none", endpoint=endpoint)
    spec = judge_spec_for_run(configured, kind="openai", capable=True)
    assert spec == JudgeSpec(kind="openai", capable=True, endpoint=endpoint)
    assert judge_spec_for_run(configured) == configured
    with pytest.raises(CandidateError, match="judge must be none, local or openai, got 'gpt'"):
        judge_spec_for_run(configured, kind="gpt")


# --- the numbers the UI plots ---------------------------------------------------------------
def test_comparison_numbers_are_floats_per_metric_and_skip_an_uncompared_one() -> None:
    rows = [
        {"metric": "token_f1", "n": 60, "diff": 0.02, "ci_low": -0.01, "ci_high": 0.05},
        {"metric": "faithfulness", "n": 0, "diff": None, "ci_low": None, "ci_high": None},
    ]
    numbers = comparison_numbers(rows)
    assert numbers == {
        "n/token_f1": 60,
        "diff/token_f1": 0.02,
        "ci_low/token_f1": -0.01,
        "ci_high/token_f1": 0.05,
        "n/faithfulness": 0,
    }
    assert all(type(v) is float for k, v in numbers.items() if not k.startswith("n/"))


ROW = {
    "metric": "token_f1",
    "n": 60,
    "candidate_mean": 0.31,
    "baseline_mean": 0.29,
    "diff": 0.02,
    "ci_low": -0.01,
    "ci_high": 0.05,
    "candidate_errors": 0,
    "baseline_errors": 0,
}


def test_the_comparison_check_carries_the_interval_as_numbers_not_only_markdown() -> None:
    from types import SimpleNamespace

    from assets.evaluate import champion_comparison

    decision = SimpleNamespace(outcome="challenger", reasons=("primary token_f1 ...",))
    value = {"decision": decision, "baseline": "champion models:/b/1", "comparison": [ROW]}
    result = champion_comparison(rag_evaluation=value)
    assert (result.passed, result.severity) == (False, dg.AssetCheckSeverity.WARN)
    numbers = {k: v for k, v in result.metadata.items() if "/" in k}
    assert numbers == {
        "n/token_f1": dg.IntMetadataValue(60),
        "diff/token_f1": dg.FloatMetadataValue(0.02),
        "ci_low/token_f1": dg.FloatMetadataValue(-0.01),
        "ci_high/token_f1": dg.FloatMetadataValue(0.05),
    }


def test_the_holds_up_check_carries_the_change_since_promotion_as_numbers() -> None:
    from assets.evaluate import champion_holds_up

    regression = ChampionRegression(True, ("worse",), [{**ROW, "diff": -0.2}], "run-1")
    result = champion_holds_up(rag_evaluation={"champion_regression": regression.to_dict()})
    assert not result.passed
    assert result.metadata["diff/token_f1"] == dg.FloatMetadataValue(-0.2)
    assert result.metadata["summary"] == dg.TextMetadataValue("worse")


# --- both sides answered, compared, decided -------------------------------------------------
CASES = 30
REFERENCE = "claims are paid within thirty days"


class AnswersAlike:
    """Answers every question with the same text (what a bundle's RagPipeline returns)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.questions: list[str] = []

    def answer_many(self, questions: list[str], principal: object = None) -> list[StubAnswer]:
        self.questions += questions
        return [StubAnswer(self.text, [hit("c1", "d1", REFERENCE)]) for _ in questions]


EXTRACTIVE = GeneratorPin("builtin", "extractive:v1")
LLM = GeneratorPin("openai", "some-model")
GOLDEN = GoldenSet.from_items(
    [QAItem(f"q{i}", f"question {i}", reference_answer=REFERENCE) for i in range(CASES)],
    name="golden",
)
POLICY = PromotionPolicy(guards={}, minimums={"token_f1": 0.5})


def _evaluate(sides: Sides, pipelines: dict[str, AnswersAlike], **kwargs: Any) -> Any:
    seen: list[tuple[str, dict[str, str]]] = []

    def pipeline_for(bundle: RagBundle, tags: Any) -> AnswersAlike:
        seen.append((bundle.generator, dict(tags)))
        return pipelines[bundle.generator]

    messages: list[str] = []
    evaluation = evaluate_candidate(
        sides,
        GOLDEN,
        pipeline_for=pipeline_for,  # type: ignore[arg-type]
        metrics=[TokenF1()],
        policy=POLICY,
        n_resamples=200,
        log=messages.append,
        **kwargs,
    )
    return evaluation, seen, messages


def test_both_sides_answer_the_same_questions_and_the_better_candidate_is_champion() -> None:
    candidate = AnswersAlike(REFERENCE)  # token F1 1.0 on every case
    baseline = AnswersAlike("no idea")  # 0.0
    sides = Sides(rag_bundle(EXTRACTIVE), rag_bundle(LLM), "base model (no champion yet)", None)
    evaluation, seen, messages = _evaluate(sides, {"extractive": candidate, "llm": baseline})

    assert candidate.questions == baseline.questions == [f"question {i}" for i in range(CASES)]
    assert seen == [("extractive", {}), ("llm", {})]
    (comparison,) = evaluation.comparisons
    assert (comparison.metric, comparison.n, comparison.diff) == ("token_f1", CASES, 1.0)
    assert evaluation.decision.outcome == "champion"
    assert evaluation.decision.baseline_version is None
    assert evaluation.regression is None  # no champion: nothing to hold up
    assert evaluation.aggregates()["token_f1"] == 1.0
    assert f"candidate: answered {CASES}/{CASES}" in messages
    assert f"base model (no champion yet): answered {CASES}/{CASES}" in messages
    assert messages[-1] == evaluation.decision.summary()


def test_the_champion_answers_with_its_tags_and_is_compared_with_its_scores_then() -> None:
    champion_bundle = rag_bundle(LLM, retrieval_k=5)
    tags = {"llmops.generator_location": '{"base_url": "http://llm.test"}'}
    champion = BundleVersion("llmops-rag-bundle", "4", champion_bundle, "run-at-promotion", tags)
    sides = Sides(rag_bundle(EXTRACTIVE), champion_bundle, f"champion {champion.uri}", champion)
    # At promotion the champion answered every case perfectly; today it answers nothing useful.
    then = [{"case_id": f"q{i}", "question": f"question {i}", "token_f1": 1.0} for i in range(30)]
    asked: list[str] = []

    def recorded(run_id: str) -> list[dict[str, Any]]:
        asked.append(run_id)
        return then

    evaluation, seen, messages = _evaluate(
        sides,
        {"extractive": AnswersAlike("no idea"), "llm": AnswersAlike("no idea")},
        recorded=recorded,
    )
    assert seen == [("extractive", {}), ("llm", tags)]
    assert asked == ["run-at-promotion"]
    assert evaluation.decision.baseline_version == "4"
    assert evaluation.decision.outcome == "refused"  # the floor token_f1 >= 0.5 failed
    regression = evaluation.regression
    assert isinstance(regression, ChampionRegression) and regression.regressed
    assert regression.recorded_run_id == "run-at-promotion"
    assert regression.comparison[0]["metric"] == "token_f1"
    assert regression.comparison[0]["diff"] == -1.0
    assert regression.reasons == (
        "primary token_f1: −1.000 [−1.000, −1.000] (n=30) is worse than at promotion",
    )
    assert regression.to_dict()["summary"] == regression.summary == regression.reasons[0]
    assert f"champion since promotion: {regression.summary}" in messages
