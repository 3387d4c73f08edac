"""The daily spending budget: the latest served day's tokens and cost against the limits."""

from __future__ import annotations

import pytest

from llmops_dagster.serving.budget import day_spend
from llmops_dagster.serving.daily_report import ServingMetrics

pytestmark = pytest.mark.unit


def _row(day: str, version: str, prompt: int, completion: int, cost: float) -> ServingMetrics:
    return ServingMetrics(day, version, 10, 1.0, 2.0, prompt, completion, cost, 0.0, 0.0, 1.0,
                          0, 0, 0.0, None, 0)  # fmt: skip


ROWS = [
    _row("2026-12-05", "3", 900_000, 100_000, 5.0),  # an earlier day: not the one checked
    _row("2026-12-06", "3", 40_000, 2_000, 0.40),
    _row("2026-12-06", "4", 8_000, 500, 0.10),
]


def test_the_latest_day_is_summed_over_bundle_versions_and_within_budget() -> None:
    spend = day_spend(ROWS, token_budget=60_000, cost_budget_usd=1.0)
    assert spend is not None
    assert (spend.day, spend.tokens, round(spend.cost_usd, 6)) == ("2026-12-06", 50_500, 0.5)
    assert spend.over is False
    assert (
        spend.describe()
        == "2026-12-06: 50,500 tokens of 60,000, $0.5000 of $1.0000 — within budget"
    )


@pytest.mark.parametrize(
    ("tokens", "cost", "over_tokens", "over_cost"),
    [(50_000, None, True, False), (None, 0.45, False, True), (None, None, False, False)],
)
def test_either_limit_crossed_is_over_budget(
    tokens: int | None, cost: float | None, over_tokens: bool, over_cost: bool
) -> None:
    spend = day_spend(ROWS, token_budget=tokens, cost_budget_usd=cost)
    assert spend is not None
    assert (spend.over_tokens, spend.over_cost, spend.over) == (
        over_tokens,
        over_cost,
        over_tokens or over_cost,
    )


def test_nothing_served_has_no_spend() -> None:
    assert day_spend([], token_budget=1, cost_budget_usd=1.0) is None
