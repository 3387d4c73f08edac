"""Serving metrics from hand-built rows: exact percentiles, rates, sums and score drift; the
flattening of a trace's metadata into a warehouse row; the evaluation's mean top score."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.daily_report import ServedTrace, score_drift, serving_report
from llmops_dagster.sources.serving import trace_row

pytestmark = pytest.mark.unit

DAY1, DAY2 = "2026-11-30", "2026-12-01"


def _traces() -> list[ServedTrace]:
    # Bundle 3 on day 1: ten answers, 100..1000 ms; 2 without a hit, 1 refused as irrelevant,
    # 7 citing something.
    day1 = [
        ServedTrace(
            trace_id=f"t{i}",
            day=DAY1,
            bundle_version="3",
            latency_ms=100.0 * (i + 1),
            prompt_tokens=10,
            completion_tokens=5,
            cost_usd=0.25,
            no_hit=i >= 8,
            cited_count=1 if i < 7 else 0,
            top_score=None if i >= 8 else 0.5 + 0.125 * (i % 2),
            # t7 had hits, none relevant enough: the server refused to answer from them
            refused="nothing_relevant" if i == 7 else "",
        )
        for i in range(10)
    ]
    base = [
        ServedTrace("b0", DAY1, "", 50.0, 4, 2, 0.0, False, 1, 0.75),
        ServedTrace("b1", DAY1, "", None, 4, 2, 0.0, True, 0, None),
    ]
    day2 = [
        # an injection refusal is not a gap in the documents: not a no-answer
        ServedTrace("n0", DAY2, "3", 2000.0, 8, 8, 0.5, False, 0, 0.25, "prompt_injection"),
        ServedTrace("n1", DAY2, "", 40.0, 1, 1, 0.0, False, 1, 1.0),
    ]
    return day1 + base + day2


FEEDBACK = [
    ("t0", "down"),
    ("t0", "up"),  # another user liked it: still an answer with a thumbs-down
    ("t1", "up"),
    ("t2", "down"),
    ("b1", "down"),
    ("n0", "down"),
]


def test_report_per_day_and_bundle_with_exact_values() -> None:
    report = serving_report(_traces(), FEEDBACK)
    assert [(r.day, r.bundle_version) for r in report.rows] == [
        (DAY1, "3"),
        (DAY1, "base"),
        (DAY2, "3"),
        (DAY2, "base"),
    ]
    bundle3, base, late3, late_base = report.rows
    assert bundle3.requests == 10
    assert (bundle3.p50_latency_ms, bundle3.p95_latency_ms) == (500.0, 1000.0)
    assert (bundle3.prompt_tokens, bundle3.completion_tokens) == (100, 50)
    assert bundle3.cost_usd == 2.5
    assert bundle3.no_hit_rate == 0.2
    assert bundle3.no_answer_rate == 0.3  # t8, t9 without hits + t7 refused
    assert bundle3.citation_rate == 0.7
    assert (bundle3.rated, bundle3.thumbs_down) == (3, 2)
    assert bundle3.thumbs_down_rate == 2 / 3
    # Hits t0..t7 alternate 0.5 / 0.625.
    assert (bundle3.scored, bundle3.top_score_mean) == (8, 0.5625)

    assert base.requests == 2
    assert (base.p50_latency_ms, base.p95_latency_ms) == (50.0, 50.0)  # one latency known
    assert (base.no_hit_rate, base.citation_rate) == (0.5, 0.5)
    assert base.no_answer_rate == 0.5
    assert (base.rated, base.thumbs_down, base.thumbs_down_rate) == (1, 1, 1.0)
    assert (base.scored, base.top_score_mean) == (1, 0.75)

    assert late3.thumbs_down_rate == 1.0 and late3.cost_usd == 0.5
    assert (late_base.rated, late_base.thumbs_down_rate) == (0, 0.0)  # nothing rated

    latest = report.latest
    assert latest is not None
    assert (latest.day, latest.bundle_version, latest.requests) == (DAY2, "all", 2)
    assert (latest.p50_latency_ms, latest.p95_latency_ms) == (40.0, 2000.0)
    assert (latest.prompt_tokens, latest.completion_tokens, latest.cost_usd) == (9, 9, 0.5)
    assert (latest.rated, latest.thumbs_down, latest.thumbs_down_rate) == (1, 1, 1.0)
    assert (latest.no_hit_rate, latest.citation_rate) == (0.0, 0.5)
    assert latest.no_answer_rate == 0.0
    assert report.requests == 14


def test_empty_report() -> None:
    report = serving_report([], [])
    assert report.rows == [] and report.latest is None and report.requests == 0


def test_score_drift_uses_the_latest_day_the_version_answered_with_hits() -> None:
    report = serving_report(_traces(), FEEDBACK)
    drift = score_drift(report, "3", evaluated_mean=0.5, max_drift=0.25)
    assert drift is not None
    assert (drift.day, drift.served_mean, drift.served_n) == (DAY2, 0.25, 1)
    assert drift.drift == 0.5 and drift.drifted
    assert "relative change 0.500 (drifted" in drift.describe()
    within = score_drift(report, "3", evaluated_mean=0.3125, max_drift=0.25)
    assert within is not None and within.drift == 0.2 and not within.drifted
    assert score_drift(report, "7", evaluated_mean=0.5, max_drift=0.25) is None
    assert score_drift(report, "3", evaluated_mean=0.0, max_drift=0.25) is None


def test_trace_row_flattens_the_metadata() -> None:
    metadata = {
        keys.BUNDLE_URI: "models:/llmops-rag-bundle/3",
        keys.BUNDLE_VERSION: "3",
        keys.PROMPT_VERSION: "rag_answer@abc",
        keys.MODEL_ID: "smollm2",
        keys.RETRIEVAL_K: "3",
        keys.PROMPT_TOKENS: "120",
        keys.COMPLETION_TOKENS: "17",
        keys.COST_USD: "0.0015",
        keys.TOP_SCORE: "0.0328",
        keys.NO_HIT: "false",
        keys.CITED_CHUNK_IDS: json.dumps(["c1"]),
        keys.RETRIEVED_CHUNK_IDS: json.dumps(["c1", "c2", "c3"]),
        keys.TOTAL_MS: "812.5",
        keys.REFUSED: "nothing_relevant",
    }
    start = int(datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)
    row = trace_row("tr-1", start, 1500, "OK", metadata, {keys.TAG_SOURCE: "serve"})
    assert row["day"] == "2026-12-01"
    assert row["request_time"] == datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)
    assert row["end_time_ms"] == start + 1500
    assert (row["duration_ms"], row["total_ms"]) == (1500.0, 812.5)
    assert (row["bundle_version"], row["prompt_version"], row["retrieval_k"]) == (
        "3",
        "rag_answer@abc",
        3,
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (120, 17, 0.0015)
    assert (row["top_score"], row["no_hit"], row["refused"]) == (0.0328, False, "nothing_relevant")
    assert (row["cited_count"], row["retrieved_count"]) == (1, 3)
    assert row["source"] == "serve" and row["state"] == "OK"

    bare = trace_row("tr-2", start, None, "ERROR", {keys.TOP_SCORE: "", keys.NO_HIT: "true"}, {})
    assert bare["bundle_version"] == "" and bare["top_score"] is None and bare["no_hit"] is True
    assert bare["cited_count"] is None and bare["duration_ms"] is None and bare["refused"] == ""
    assert bare["end_time_ms"] == start


@dataclass
class _Hit:
    chunk_id: str
    doc_id: str
    score: float
    text: str = "text"


@dataclass
class _Answer:
    text: str
    retrieved: list[_Hit]
    ranked: list[_Hit] = field(default_factory=list)
    total_ms: float = 10.0

    @property
    def ranked_doc_ids(self) -> list[str]:
        return [h.doc_id for h in self.ranked or self.retrieved]


class _Pipeline:
    def __init__(self, answers: dict[str, _Answer]) -> None:
        self.answers = answers

    def answer_many(self, questions: list[str], principal: object = None) -> list[_Answer]:
        return [self.answers[q] for q in questions]


def test_evaluation_logs_the_mean_top_retrieval_score() -> None:
    from llmops_dagster.evaluate.bundle_eval import TOP_SCORE_MEAN, evaluate_pipeline
    from llmops_dagster.evaluate.golden import GoldenSet
    from llmops_dagster.qa import QAItem

    golden = GoldenSet.from_items(
        [
            QAItem(f"q{i}", f"question {i}", relevant_doc_ids=("d",), reference_answer="answer")
            for i in range(3)
        ],
        name="g",
    )
    pipeline = _Pipeline(
        {
            "question 0": _Answer("a", [_Hit("c1", "d", 0.5)], [_Hit("c1", "d", 0.75)]),
            "question 1": _Answer("a", [_Hit("c2", "d", 0.25), _Hit("c3", "d", 0.125)]),
            "question 2": _Answer("a", []),  # no hit: not part of the mean
        }
    )
    result = evaluate_pipeline(pipeline, golden, metrics=[], batch_size=2)  # type: ignore[arg-type]
    assert result.aggregates[TOP_SCORE_MEAN] == 0.5
