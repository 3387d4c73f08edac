"""Settings of the HTTP service (``llmops-dagster serve``): its traces, feedback, guards and the
thresholds the serving checks warn at (→ ``ServingResource``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from llmops_dagster.config.base import GROUP_CONFIG, env


class ServingSettings(BaseSettings):
    """The HTTP service (``llmops-dagster serve``), its traces, feedback and watch thresholds
    (→ ``ServingResource``)."""

    model_config = GROUP_CONFIG

    host: str = Field(default="127.0.0.1", validation_alias=env("LLMOPS_SERVE_HOST"))
    port: int = Field(default=8000, validation_alias=env("LLMOPS_SERVE_PORT"))
    store_path: Path | None = Field(
        default=None,
        validation_alias=env("LLMOPS_SERVING_STORE"),
        description="SQLite file of served answers and feedback; LLMOPS_HOME/serving/serving.db.",
    )
    trace_experiment: str = Field(
        default="llmops-serving",
        validation_alias=env("LLMOPS_TRACE_EXPERIMENT"),
        description="MLflow experiment that holds one trace per served answer.",
    )
    bundle_poll_s: float = Field(
        default=10.0,
        validation_alias=env("LLMOPS_BUNDLE_POLL_S"),
        description="How often the server checks whether the champion alias moved.",
    )
    max_concurrent_generations: int = Field(
        default=1,
        validation_alias=env("LLMOPS_MAX_CONCURRENT_GENERATIONS"),
        description="Answers generated at once; more requests wait their turn.",
    )
    max_question_chars: int = Field(default=2000, validation_alias=env("LLMOPS_MAX_QUESTION_CHARS"))
    api_keys_path: Path | None = Field(
        default=None,
        validation_alias=env("LLMOPS_API_KEYS"),
        description=(
            "JSON file of hashed API keys (llmops-dagster keys add); unset = no authentication, "
            "every caller sees public documents only."
        ),
    )
    rate_limit_per_minute: float = Field(
        default=60.0,
        validation_alias=env("LLMOPS_RATE_LIMIT_PER_MIN"),
        description="Sustained requests per minute per API key (per client address without keys).",
    )
    rate_limit_burst: int = Field(default=10, validation_alias=env("LLMOPS_RATE_LIMIT_BURST"))
    max_waiting: int = Field(
        default=16,
        validation_alias=env("LLMOPS_MAX_WAITING"),
        description="Answers allowed to wait for generation; beyond that a request gets 503.",
    )
    queue_timeout_s: float = Field(
        default=60.0,
        validation_alias=env("LLMOPS_QUEUE_TIMEOUT_S"),
        description="How long a request waits for generation before 503 + Retry-After.",
    )
    injection_policy: Literal["flag", "refuse"] = Field(
        default="flag",
        validation_alias=env("LLMOPS_INJECTION_POLICY"),
        description="flag: answer and mark it; refuse: answer a flagged question with a refusal.",
    )
    min_relevance: float = Field(
        # Measured on the sample corpus with all-MiniLM-L6-v2: the 200 golden questions' best
        # chunk scores at least 0.645 (median 0.80), ten off-topic questions 0.55–0.636.
        default=0.62,
        validation_alias=env("LLMOPS_MIN_RELEVANCE"),
        description=(
            "Refuse ('not in the documents you can see') when no retrieved chunk reaches this "
            "kNN similarity ((1 + cosine) / 2); depends on the embedding model."
        ),
    )
    price_table: Path | None = Field(
        default=None,
        validation_alias=env("LLMOPS_PRICE_TABLE"),
        description=(
            "JSON {model_id: {input_per_1m, output_per_1m}} in USD for remote models; "
            "the local model costs 0."
        ),
    )
    answer_cache_entries: int = Field(
        default=0,
        ge=0,
        validation_alias=env("LLMOPS_SERVING_ANSWER_CACHE_ENTRIES"),
        description=(
            "Answers kept in memory per server process for repeated questions (same bundle, "
            "index, caller groups, filters and normalised question; greedy bundles only); "
            "0 = off. Emptied when the champion or the alias's index moves."
        ),
    )
    answer_cache_ttl_s: float = Field(
        default=600.0,
        gt=0,
        validation_alias=env("LLMOPS_SERVING_ANSWER_CACHE_TTL_S"),
        description=(
            "How long a cached answer is reused; bounds how far it lags documents re-synced "
            "in place into the same index."
        ),
    )
    p95_latency_ms: float = Field(
        default=15_000.0,
        validation_alias=env("LLMOPS_WATCH_P95_MS"),
        description="serving_metrics warns above this p95 answer latency.",
    )
    max_thumbs_down_rate: float = Field(
        default=0.3, validation_alias=env("LLMOPS_WATCH_THUMBS_DOWN_RATE")
    )
    max_no_answer_rate: float = Field(
        default=0.2, validation_alias=env("LLMOPS_WATCH_NO_ANSWER_RATE")
    )
    trace_settle_s: float = Field(
        default=60.0,
        validation_alias=env("LLMOPS_TRACE_SETTLE_S"),
        description="The serving loaders take traces and feedback once they are this old.",
    )
    max_score_drift: float = Field(
        default=0.25,
        validation_alias=env("LLMOPS_WATCH_SCORE_DRIFT"),
        description="Relative change of the mean top retrieval score vs the champion's evaluation.",
    )
    daily_token_budget: int | None = Field(
        default=None,
        gt=0,
        validation_alias=env("LLMOPS_WATCH_DAILY_TOKENS"),
        description="serving_metrics warns when the latest day's prompt + completion tokens "
        "exceed this (unset: no token budget).",
    )
    daily_cost_budget_usd: float | None = Field(
        default=None,
        gt=0,
        validation_alias=env("LLMOPS_WATCH_DAILY_COST_USD"),
        description="serving_metrics warns when the latest day's cost exceeds this (priced "
        "models only; unset: no cost budget).",
    )
    rollout: Literal["off", "split", "shadow"] = Field(
        default="off",
        validation_alias=env("LLMOPS_SERVING_ROLLOUT"),
        description="Staged rollout of the challenger alias: split (a sticky share of callers "
        "gets its answers) or shadow (it answers too, traced and logged, never returned).",
    )
    challenger_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        validation_alias=env("LLMOPS_SERVING_CHALLENGER_SHARE"),
        description="Share of callers the challenger answers under rollout=split.",
    )
