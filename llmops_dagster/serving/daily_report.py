"""What the served answers cost and how they went, per day and bundle version.

Computed from the warehouse tables the ``serving`` dlt source loads (``serving_traces``,
``serving_feedback``). Definitions (each chosen so a threshold on it means one thing):

- ``requests``: traces (finished answers, errors included) in the group.
- ``p50_latency_ms`` / ``p95_latency_ms``: nearest-rank percentiles
  (:func:`llmops_dagster.stats.percentile`: the smallest latency with at least p % of the
  requests at or below it, always an observed value) of the server's ``total_ms``; a trace
  without it falls back to the trace's own duration.
- ``no_hit_rate``: share of requests for which retrieval found nothing.
- ``no_answer_rate``: share of requests the user got no answer to from the documents: no hit,
  or hits of which none was relevant enough (the server's relevance refusal,
  ``refused = "nothing_relevant"``). Injection refusals are not counted: they are a security
  outcome, watched by the guardrail counters, not a gap in the corpus.
- ``citation_rate``: share of requests whose answer cites at least one chunk.
- ``thumbs_down_rate``: share of *rated* requests (at least one feedback row) with at least one
  thumbs-down; 0 when nothing was rated. Rated, not all, requests are the denominator because
  most users never rate: over all requests the rate would mostly measure how often people
  click, and a threshold such as 0.3 would never be reached. ``rated`` says how many answers
  the rate rests on.
- ``top_score_mean``: mean top retrieval score over the requests that retrieved something;
  compared with the champion's evaluation (``retrieval.top_score_mean``) to see drift.
- ``cache_hits`` / ``cache_hit_rate``: requests answered from the server's answer cache
  (:mod:`llmops_dagster.serving.answer_cache`), and their share of all requests (0 when the
  cache is off or nothing repeated; traces from before the cache count as misses).

Feedback counts towards the day and bundle of the answer it rates, not the day it was given.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from llmops_dagster.stats import percentile

if TYPE_CHECKING:
    import duckdb

ALL_BUNDLES = "all"
BASE_MODEL = "base"  # how the empty bundle version (answers of the base model) is shown
NOTHING_RELEVANT = "nothing_relevant"  # the server's relevance refusal (serving/guards.py)


@dataclass(frozen=True)
class ServedTrace:
    """The columns of one ``serving_traces`` row the metrics read."""

    trace_id: str
    day: str
    bundle_version: str
    latency_ms: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    no_hit: bool = False
    cited_count: int = 0
    top_score: float | None = None
    refused: str = ""
    cache_hit: bool = False  # replayed from the server's answer cache


@dataclass(frozen=True)
class ServingMetrics:
    day: str
    bundle_version: str
    requests: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    no_hit_rate: float
    no_answer_rate: float
    citation_rate: float
    rated: int
    thumbs_down: int
    thumbs_down_rate: float
    top_score_mean: float | None
    scored: int
    cache_hits: int = 0
    cache_hit_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServingReport:
    """Per day × bundle version rows (day, then version order) and the latest day over all
    bundles (``None`` when nothing was served)."""

    rows: list[ServingMetrics]
    latest: ServingMetrics | None

    @property
    def requests(self) -> int:
        return sum(row.requests for row in self.rows)


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def summarize(
    day: str,
    bundle_version: str,
    traces: Sequence[ServedTrace],
    ratings: Mapping[str, set[str]],
) -> ServingMetrics:
    """The metrics of one group; ``ratings`` maps a trace id to the ratings it received."""
    latencies = [t.latency_ms for t in traces if t.latency_ms is not None]
    rated = [t for t in traces if ratings.get(t.trace_id)]
    down = [t for t in rated if "down" in ratings[t.trace_id]]
    scores = [t.top_score for t in traces if t.top_score is not None and not t.no_hit]
    return ServingMetrics(
        day=day,
        bundle_version=bundle_version,
        requests=len(traces),
        p50_latency_ms=percentile(latencies, 50),
        p95_latency_ms=percentile(latencies, 95),
        prompt_tokens=sum(t.prompt_tokens for t in traces),
        completion_tokens=sum(t.completion_tokens for t in traces),
        cost_usd=sum(t.cost_usd for t in traces),
        no_hit_rate=_share(sum(t.no_hit for t in traces), len(traces)),
        no_answer_rate=_share(
            sum(t.no_hit or t.refused == NOTHING_RELEVANT for t in traces), len(traces)
        ),
        citation_rate=_share(sum(t.cited_count > 0 for t in traces), len(traces)),
        rated=len(rated),
        thumbs_down=len(down),
        thumbs_down_rate=_share(len(down), len(rated)),
        top_score_mean=statistics.fmean(scores) if scores else None,
        scored=len(scores),
        cache_hits=sum(t.cache_hit for t in traces),
        cache_hit_rate=_share(sum(t.cache_hit for t in traces), len(traces)),
    )


def serving_report(
    traces: Iterable[ServedTrace], feedback: Iterable[tuple[str, str]]
) -> ServingReport:
    """Group ``traces`` by (day, bundle version); ``feedback`` is (trace id, rating) pairs."""
    ratings: dict[str, set[str]] = defaultdict(set)
    for trace_id, rating in feedback:
        ratings[trace_id].add(rating)
    groups: dict[tuple[str, str], list[ServedTrace]] = defaultdict(list)
    by_day: dict[str, list[ServedTrace]] = defaultdict(list)
    for trace in traces:
        version = trace.bundle_version or BASE_MODEL
        groups[(trace.day, version)].append(trace)
        by_day[trace.day].append(trace)
    rows = [
        summarize(day, version, group, ratings) for (day, version), group in sorted(groups.items())
    ]
    latest = None
    if by_day:
        day = max(by_day)
        latest = summarize(day, ALL_BUNDLES, by_day[day], ratings)
    return ServingReport(rows=rows, latest=latest)


# --------------------------------------------------------------------------------------------
# Reading the warehouse
# --------------------------------------------------------------------------------------------


def read_serving_rows(
    con: duckdb.DuckDBPyConnection, dataset: str
) -> tuple[list[ServedTrace], list[tuple[str, str]]]:
    """The loaded traces and (trace id, rating) feedback pairs; empty before the first load."""
    from llmops_dagster.warehouse import table_exists

    traces: list[ServedTrace] = []
    feedback: list[tuple[str, str]] = []
    if table_exists(con, dataset, "serving_traces"):
        # Tables loaded before the column existed lack it until the next load adds it.
        has_refused = con.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = 'serving_traces' AND column_name = 'refused'",
            [dataset],
        ).fetchone()[0]
        refused = "coalesce(refused, '')" if has_refused else "''"
        has_cache_hit = con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = ? AND "
            "table_name = 'serving_traces' AND column_name = 'cache_hit'",
            [dataset],
        ).fetchone()[0]
        cache_hit = "coalesce(cache_hit, false)" if has_cache_hit else "false"
        rows = con.execute(
            f"""
            SELECT trace_id, day, coalesce(bundle_version, ''),
                   coalesce(total_ms, duration_ms),
                   coalesce(prompt_tokens, 0), coalesce(completion_tokens, 0),
                   coalesce(cost_usd, 0.0),
                   coalesce(no_hit, retrieved_count = 0, false),
                   coalesce(cited_count, 0), top_score, {refused}, {cache_hit}
            FROM "{dataset}".serving_traces ORDER BY trace_id
            """
        ).fetchall()
        traces = [
            ServedTrace(
                trace_id=r[0],
                day=r[1],
                bundle_version=r[2],
                latency_ms=None if r[3] is None else float(r[3]),
                prompt_tokens=int(r[4]),
                completion_tokens=int(r[5]),
                cost_usd=float(r[6]),
                no_hit=bool(r[7]),
                cited_count=int(r[8]),
                top_score=None if r[9] is None else float(r[9]),
                refused=r[10] or "",
                cache_hit=bool(r[11]),
            )
            for r in rows
        ]
    if table_exists(con, dataset, "serving_feedback"):
        feedback = [
            (str(r[0]), str(r[1]))
            for r in con.execute(
                f'SELECT trace_id, rating FROM "{dataset}".serving_feedback ORDER BY trace_id'
            ).fetchall()
        ]
    return traces, feedback


# --------------------------------------------------------------------------------------------
# Drift of retrieval scores against the champion's evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreDrift:
    """Served vs evaluated mean top retrieval score of one bundle version."""

    bundle_version: str
    day: str
    served_mean: float
    served_n: int
    evaluated_mean: float
    drift: float  # |served − evaluated| / evaluated
    max_drift: float

    @property
    def drifted(self) -> bool:
        return self.drift > self.max_drift

    def describe(self) -> str:
        verb = "drifted" if self.drifted else "within"
        return (
            f"bundle v{self.bundle_version} on {self.day}: served mean top score "
            f"{self.served_mean:.4f} over {self.served_n} answers vs {self.evaluated_mean:.4f} "
            f"in its evaluation: relative change {self.drift:.3f} ({verb} the limit "
            f"{self.max_drift:g})"
        )


def score_drift(
    report: ServingReport, bundle_version: str, evaluated_mean: float, max_drift: float
) -> ScoreDrift | None:
    """Drift on the latest day the bundle version answered with hits; ``None`` when it has no
    scored answers (or the evaluated mean is 0, where a relative change means nothing)."""
    rows = [r for r in report.rows if r.bundle_version == bundle_version and r.scored]
    if not rows or evaluated_mean == 0:
        return None
    row = max(rows, key=lambda r: r.day)
    assert row.top_score_mean is not None  # scored > 0
    return ScoreDrift(
        bundle_version=bundle_version,
        day=row.day,
        served_mean=row.top_score_mean,
        served_n=row.scored,
        evaluated_mean=evaluated_mean,
        drift=abs(row.top_score_mean - evaluated_mean) / abs(evaluated_mean),
        max_drift=max_drift,
    )
