"""The serving resource: what the HTTP service leaves behind for the serving loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from llmops_dagster.config import Settings


class ServingResource(dg.ConfigurableResource):
    """What the HTTP service leaves behind for the serving loop: its store of answers and
    feedback (SQLite), the MLflow experiment of its traces, where feedback candidates are
    written for review, and the thresholds the serving checks warn at."""

    store_path: str = Field(description="SQLite file of served answers, feedback and reviews.")
    trace_experiment: str = Field(
        default="llmops-serving", description="MLflow experiment with one trace per answer."
    )
    candidates_path: str = Field(description="JSONL of feedback candidates for review.")
    p95_latency_ms: float = Field(default=15_000.0, description="Warn above this p95 latency.")
    max_thumbs_down_rate: float = Field(default=0.3, description="Of rated answers.")
    max_no_answer_rate: float = Field(
        default=0.2, description="Answers without a (relevant) retrieval hit."
    )
    max_score_drift: float = Field(
        default=0.25, description="Relative change of the mean top retrieval score."
    )
    daily_token_budget: int | None = Field(
        default=None, description="Warn when the latest day's tokens exceed this."
    )
    daily_cost_budget_usd: float | None = Field(
        default=None, description="Warn when the latest day's cost (USD) exceeds this."
    )
    trace_settle_s: float = Field(
        default=60.0,
        description="Load only traces and feedback at least this old, so rows that become "
        "visible out of order are not skipped by the incremental cursors.",
    )

    @classmethod
    def from_settings(cls, settings: Settings, *, resolve_secrets: bool = False) -> ServingResource:
        del resolve_secrets  # no secret among these fields
        serving = settings.serving
        return cls(
            store_path=str(settings.serving_store_path),
            trace_experiment=serving.trace_experiment,
            candidates_path=str(settings.home / "feedback" / "candidates.jsonl"),
            p95_latency_ms=serving.p95_latency_ms,
            max_thumbs_down_rate=serving.max_thumbs_down_rate,
            max_no_answer_rate=serving.max_no_answer_rate,
            max_score_drift=serving.max_score_drift,
            trace_settle_s=serving.trace_settle_s,
            daily_token_budget=serving.daily_token_budget,
            daily_cost_budget_usd=serving.daily_cost_budget_usd,
        )
