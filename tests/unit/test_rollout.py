"""Staged rollout routing: sticky per caller, the configured share, settings validated."""

from __future__ import annotations

import pytest

from llmops_dagster.serving.rollout import (
    RolloutConfigError,
    RolloutPlan,
    arm_for,
    caller_position,
)

pytestmark = pytest.mark.unit


def test_a_caller_always_gets_the_same_bundle_for_one_challenger() -> None:
    plan = RolloutPlan("split", 0.5)
    for caller in ("ann", "bob", "key-7f3a"):
        arms = {arm_for(plan, caller, "12") for _ in range(50)}
        assert len(arms) == 1


def test_ten_percent_of_2000_callers_get_the_challenger_within_two_points() -> None:
    plan = RolloutPlan("split", 0.10)
    arms = [arm_for(plan, f"caller-{n}", "12") for n in range(2000)]
    share = arms.count("challenger") / len(arms)
    assert abs(share - 0.10) <= 0.02, share


def test_a_new_challenger_draws_new_callers() -> None:
    plan = RolloutPlan("split", 0.10)
    first = {f"c{n}" for n in range(2000) if arm_for(plan, f"c{n}", "12") == "challenger"}
    second = {f"c{n}" for n in range(2000) if arm_for(plan, f"c{n}", "13") == "challenger"}
    assert first != second and len(first & second) < len(first) // 2


@pytest.mark.parametrize(
    ("plan", "version"),
    [(RolloutPlan("off", 1.0), "12"), (RolloutPlan("shadow", 1.0), "12"),
     (RolloutPlan("split", 1.0), None), (RolloutPlan("split", 0.0), "12")],
)  # fmt: skip
def test_the_champion_answers_unless_a_split_sends_the_caller_to_a_challenger(
    plan: RolloutPlan, version: str | None
) -> None:
    assert {arm_for(plan, f"c{n}", version) for n in range(200)} == {"champion"}


def test_positions_are_in_the_unit_interval() -> None:
    positions = [caller_position(f"c{n}", "12") for n in range(1000)]
    assert all(0.0 <= p < 1.0 for p in positions)


@pytest.mark.parametrize(
    ("mode", "share", "message"),
    [("canary", 0.1, "LLMOPS_SERVING_ROLLOUT='canary': expected one of off, split, shadow"),
     ("split", 1.5, "LLMOPS_SERVING_CHALLENGER_SHARE=1.5: a share of callers in \\[0, 1\\]")],
)  # fmt: skip
def test_bad_rollout_settings_are_refused_naming_them(
    mode: str, share: float, message: str
) -> None:
    with pytest.raises(RolloutConfigError, match=message):
        RolloutPlan(mode, share)  # type: ignore[arg-type]


def test_only_a_shadow_or_a_real_split_needs_a_challenger() -> None:
    assert RolloutPlan("shadow").needs_challenger
    assert RolloutPlan("split", 0.1).needs_challenger
    assert not RolloutPlan("split", 0.0).needs_challenger
    assert not RolloutPlan("off", 0.5).needs_challenger
