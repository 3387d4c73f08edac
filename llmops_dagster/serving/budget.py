"""The daily spending budget of the served answers: tokens, or currency where the models are
priced (``serving/pricing.py``).

A budget is a WARN, not a stop: the server keeps answering (refusing users because a counter
crossed a line is a product decision, not an operations default); the check tells a person, in
the Dagster UI, on the day it happens. Both limits are optional; a day is over budget when it
crossed either. The day checked is the latest one served (the one still accumulating when the
hourly serving watch runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmops_dagster.serving.daily_report import ServingMetrics


@dataclass(frozen=True)
class DaySpend:
    day: str
    tokens: int
    cost_usd: float
    token_budget: int | None
    cost_budget_usd: float | None

    @property
    def over_tokens(self) -> bool:
        return self.token_budget is not None and self.tokens > self.token_budget

    @property
    def over_cost(self) -> bool:
        return self.cost_budget_usd is not None and self.cost_usd > self.cost_budget_usd

    @property
    def over(self) -> bool:
        return self.over_tokens or self.over_cost

    def describe(self) -> str:
        parts = [f"{self.tokens:,} tokens"]
        if self.token_budget is not None:
            parts[0] += f" of {self.token_budget:,}"
        cost = f"${self.cost_usd:.4f}"
        if self.cost_budget_usd is not None:
            cost += f" of ${self.cost_budget_usd:.4f}"
        verdict = "over budget" if self.over else "within budget"
        return f"{self.day}: {parts[0]}, {cost} — {verdict}"


def day_spend(
    rows: Sequence[ServingMetrics],
    *,
    token_budget: int | None,
    cost_budget_usd: float | None,
) -> DaySpend | None:
    """What the latest served day spent over every bundle version (None: nothing served)."""
    if not rows:
        return None
    day = max(row.day for row in rows)
    of_day = [row for row in rows if row.day == day]
    return DaySpend(
        day=day,
        tokens=sum(row.prompt_tokens + row.completion_tokens for row in of_day),
        cost_usd=sum(row.cost_usd for row in of_day),
        token_budget=token_budget,
        cost_budget_usd=cost_budget_usd,
    )
