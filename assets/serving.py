"""Serving assets (group ``serve``): what the HTTP service answered, how it went, what users
said, and which answers a reviewer should look at.

- ``serving_traces`` / ``serving_feedback``: one ``@dlt_assets`` definition over the dlt source
  ``serving`` (MLflow traces of the trace experiment; the serving store's feedback), merged
  into the warehouse by trace id (and user), incremental: a run with nothing new loads 0 rows.
  dagster-dlt, like the ``ingest`` group, so both tables are assets with dlt's own metadata.
- ``serving_metrics``: per day × bundle version latency, tokens, cost and quality rates, with
  WARN checks (latency, thumbs-down, no-answer rate, retrieval score drift vs the champion's
  evaluation). Warnings, not blocking: nothing downstream should stop because users were slow
  to click; they are signals for a person (and plotted over materializations). It also
  compares challenger and champion on the same days and settles a challenger awaiting online
  evidence (promote / refuse / wait: `evaluate/online_gate.py`).
- ``feedback_candidates``: thumbs-down answers and corrections awaiting review
  (``llmops-dagster feedback list / accept / reject``), as a warehouse table and a JSONL file.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from assets._metadata import md
from assets.ingest import WAREHOUSE_WRITERS_POOL
from llmops_dagster.resources import (
    DatasetsResource,
    MlflowResource,
    ServingResource,
    WarehouseResource,
)
from llmops_dagster.serving.daily_report import ServingMetrics, ServingReport
from llmops_dagster.sources.dlt_pipelines import WarehouseTarget, loaded_row_counts, make_pipeline
from llmops_dagster.warehouse import replace_table

GROUP = "serve"
PIPELINE_NAME = "llmops_serving"
_TABLES = ("serving_traces", "serving_feedback")
CANDIDATES_TABLE = "llmops.feedback_candidates"
METRICS_TABLE = "llmops.serving_metrics"
METRIC_COLUMNS = [
    "day",
    "bundle_version",
    "requests",
    "p50_latency_ms",
    "p95_latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "no_hit_rate",
    "no_answer_rate",
    "citation_rate",
    "rated",
    "thumbs_down",
    "thumbs_down_rate",
    "top_score_mean",
    "scored",
    "cache_hits",
    "cache_hit_rate",
]

_DESCRIPTIONS = {
    "serving_traces": "One row per served answer's MLflow trace (trace experiment), its "
    "llmops.* metadata as columns; merged on trace_id, incremental on the trace's end time.",
    "serving_feedback": "Users' thumbs up/down, corrections and comments from the serving "
    "store; merged on (trace_id, user_id), incremental on updated_at.",
}


class ServingTranslator(DagsterDltTranslator):
    """Asset key = the dlt resource (table) name, in the ``serve`` group."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        name = str(data.resource.name)
        return spec.replace_attributes(
            key=dg.AssetKey(name),
            deps=[],
            group_name=GROUP,
            owners=["team:ml-platform"],
            description=_DESCRIPTIONS.get(name, spec.description),
            kinds={"dlt", "duckdb"},
        )


def build_serving_load_assets(target: WarehouseTarget) -> dg.AssetsDefinition:
    """The dlt assets ``serving_traces`` and ``serving_feedback``; ``target`` only describes
    them (runs load into the warehouse resource's target)."""
    from llmops_dagster.sources.serving import serving_source

    def make_source(serving: ServingResource | None = None, tracking_uri: str = "") -> Any:
        # The source is a one-shot generator: a fresh one per run. Described without values
        # (the resources are lazy, nothing is read until the pipeline runs them).
        if serving is None:
            return serving_source(tracking_uri="", trace_experiment="", store_path="")
        return serving_source(
            tracking_uri=tracking_uri,
            trace_experiment=serving.trace_experiment,
            store_path=serving.store_path,
            settle_s=serving.trace_settle_s,
        )

    @dlt_assets(
        dlt_source=make_source(),
        dlt_pipeline=make_pipeline(target, PIPELINE_NAME),
        name="serving_load",
        dagster_dlt_translator=ServingTranslator(),
        pool=WAREHOUSE_WRITERS_POOL,
    )
    def serving_load(
        context: dg.AssetExecutionContext,
        dlt: DagsterDltResource,
        warehouse: WarehouseResource,
        mlflow: MlflowResource,
        serving: ServingResource,
    ) -> Iterator[Any]:
        tracking_uri = mlflow.store().tracking_uri  # fails fast, naming MLFLOW_TRACKING_URI
        pipeline = make_pipeline(warehouse.dlt_target(), PIPELINE_NAME)
        source = make_source(serving, tracking_uri)
        events = list(dlt.run(context=context, dlt_source=source, dlt_pipeline=pipeline))
        rows = loaded_row_counts(pipeline)
        totals = _table_rows(warehouse, _TABLES)
        trace = pipeline.last_trace
        load_ids = list(trace.last_load_info.loads_ids) if trace and trace.last_load_info else []
        link = mlflow.log_asset_run(
            context,
            asset_key="serving_load",
            params={"pipeline": pipeline.pipeline_name, "dataset": pipeline.dataset_name,
                    "trace_experiment": serving.trace_experiment},
            metrics={f"rows.{t}": float(rows.get(t, 0)) for t in _TABLES},
            tags={"dlt.load_ids": ",".join(load_ids), "dlt.pipeline": pipeline.pipeline_name},
        )  # fmt: skip
        for event in events:
            table = event.asset_key.path[-1]
            yield event._replace(
                metadata={
                    **(event.metadata or {}),
                    **link,
                    # dlt reports rows only when there were some: 0 is the incremental signal.
                    "rows_loaded": dg.MetadataValue.int(rows.get(table, 0)),
                    "rows_total": dg.MetadataValue.int(totals.get(table, 0)),
                    "dlt_load_ids": ",".join(load_ids),
                }
            )

    return serving_load


def _table_rows(warehouse: WarehouseResource, tables: tuple[str, ...]) -> dict[str, int]:
    """Rows now in each loaded table (absent before its first row): merge keeps this equal to
    the number of distinct keys, however often the same rows were loaded."""
    from llmops_dagster.warehouse import table_exists

    dataset = warehouse.dlt_dataset
    with warehouse.get_connection() as con:
        return {
            table: int(con.execute(f'SELECT count(*) FROM "{dataset}".{table}').fetchone()[0])
            for table in tables
            if table_exists(con, dataset, table)
        }


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _metrics_table(rows: list[ServingMetrics]) -> dg.TableMetadataValue:
    numeric = {"requests", "prompt_tokens", "completion_tokens", "rated", "thumbs_down", "scored",
               "cache_hits"}  # fmt: skip
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                name,
                "string"
                if name in ("day", "bundle_version")
                else ("int" if name in numeric else "float"),
            )
            for name in METRIC_COLUMNS
        ]
    )
    return dg.MetadataValue.table(
        records=[dg.TableRecord(row.to_dict()) for row in rows], schema=schema
    )


ARM_COLUMNS = ["metric", "challenger_n", "champion_n", "challenger_mean", "champion_mean",
               "diff", "ci_low", "ci_high", "higher_is_better"]  # fmt: skip


def _online_gate(client: Any, challenger: str, rows: Any) -> dict[str, Any]:
    """A challenger awaiting online evidence (`evaluate/online_gate.py`): promoted, refused or
    still waiting, with n of N as numbers. Nothing when it awaits none."""
    from llmops_dagster.evaluate.online_gate import settle_online
    from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL

    try:
        settled = settle_online(client, DEFAULT_BUNDLE_MODEL, challenger, rows)
    except Exception as exc:  # the registry failed mid-way: the next materialization retries
        return {"online_gate": f"skipped ({type(exc).__name__}: {exc}); retried next run"}
    if settled is None:
        return {}
    verdict = settled.verdict
    return {
        "online_gate": settled.action,
        "online_verdict": verdict.status,
        "online_reason": verdict.reason + (f" ({settled.detail})" if settled.detail else ""),
        "online_answers": dg.MetadataValue.int(verdict.n_answers),
        "online_answers_required": dg.MetadataValue.int(verdict.n_required),
        "online_answers/challenger": dg.MetadataValue.int(verdict.challenger_answers),
        "online_answers/champion": dg.MetadataValue.int(verdict.champion_answers),
    }


def _challenger_vs_champion(mlflow: MlflowResource, traces: Any, feedback: Any) -> dict[str, Any]:
    """The challenger's served answers against the champion's on the days both answered
    (`serving/arm_comparison.py`): a table, and each difference as a number to plot; a
    challenger awaiting online evidence is settled on it (`_online_gate`)."""
    from llmops_dagster.evaluate.gate import current_alias_version
    from llmops_dagster.rag.bundle import CHALLENGER, CHAMPION, DEFAULT_BUNDLE_MODEL
    from llmops_dagster.serving.arm_comparison import compare_arms

    try:
        client = mlflow.client()
        champion = current_alias_version(client, DEFAULT_BUNDLE_MODEL, CHAMPION)
        challenger = current_alias_version(client, DEFAULT_BUNDLE_MODEL, CHALLENGER)
    except Exception as exc:  # the metrics come from the warehouse: MLflow down costs only this
        return {
            "challenger_vs_champion": f"not compared: the registry is unreachable ({exc})",
            "online_gate": "skipped: the registry is unreachable",
        }
    if champion is None or challenger is None or challenger == champion:
        return {"challenger_vs_champion": "no challenger to compare"}
    rows, days = compare_arms(traces, feedback, challenger=challenger, champion=champion)
    numbers = {
        f"online_diff/{row.metric}": dg.MetadataValue.float(row.diff)
        for row in rows
        if row.diff is not None
    }
    return {
        "challenger_vs_champion": md([row.to_dict() for row in rows], ARM_COLUMNS),
        "compared_days": dg.MetadataValue.int(len(days)),
        "challenger_version": challenger,
        "champion_version": champion,
        **numbers,
        **_online_gate(client, challenger, rows),
    }


def _write_metrics_table(con: Any, rows: list[ServingMetrics]) -> None:
    types = {
        "day": "VARCHAR",
        "bundle_version": "VARCHAR",
        **{c: "BIGINT" for c in ("requests", "prompt_tokens", "completion_tokens", "rated")},
        **{c: "BIGINT" for c in ("thumbs_down", "scored", "cache_hits")},
    }
    columns = {c: types.get(c, "DOUBLE PRECISION") for c in METRIC_COLUMNS}
    values = [[row.to_dict()[c] for c in METRIC_COLUMNS] for row in rows]
    replace_table(con, METRICS_TABLE, columns, values)


@dg.asset(
    deps=[dg.AssetKey("serving_traces"), dg.AssetKey("serving_feedback")],
    group_name=GROUP,
    kinds={"duckdb", "python"},
    owners=["team:ml-platform"],
    pool=WAREHOUSE_WRITERS_POOL,
)
def serving_metrics(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowResource
) -> dg.Output[ServingReport]:
    """Requests, p50/p95 latency, tokens, cost, no-hit, citation, thumbs-down and answer-cache
    hit rates per day and bundle version (`llmops.serving_metrics`); the latest day over all
    bundles as numbers the UI plots across materializations. Definitions:
    `llmops_dagster.serving.daily_report`."""
    from llmops_dagster.serving.daily_report import read_serving_rows, serving_report

    with warehouse.get_connection() as con:
        traces, feedback = read_serving_rows(con, warehouse.dlt_dataset)
        report = serving_report(traces, feedback)
        _write_metrics_table(con, report.rows)
    arms = _challenger_vs_champion(mlflow, traces, feedback)
    metadata: dict[str, Any] = {
        "by_day_and_bundle": _metrics_table(report.rows),
        "requests_total": dg.MetadataValue.int(report.requests),
        # The answer cache over everything loaded (the latest day's rate is cache_hit_rate).
        "cache_hits_total": dg.MetadataValue.int(sum(r.cache_hits for r in report.rows)),
        "cache_hit_rate_overall": dg.MetadataValue.float(
            sum(r.cache_hits for r in report.rows) / report.requests if report.requests else 0.0
        ),
        "table": METRICS_TABLE,
        **arms,
    }
    latest = report.latest
    if latest is None:
        context.log.info("no served traces loaded yet")
    else:
        metadata["latest_day"] = latest.day
        values = {
            "requests": float(latest.requests),
            "p50_latency_ms": latest.p50_latency_ms,
            "p95_latency_ms": latest.p95_latency_ms,
            "thumbs_down_rate": latest.thumbs_down_rate,
            "no_hit_rate": latest.no_hit_rate,
            "no_answer_rate": latest.no_answer_rate,
            "citation_rate": latest.citation_rate,
            "cost_usd": latest.cost_usd,
            "cache_hit_rate": latest.cache_hit_rate,
        }
        metadata.update(
            {k: dg.MetadataValue.float(float(v)) for k, v in values.items() if v is not None}
        )
    return dg.Output(report, metadata=metadata)


def _no_data(what: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"nothing to check: {what}",
    )


@dg.asset_check(asset=serving_metrics, description="p95 answer latency within budget")
def p95_latency_within_budget(
    serving_metrics: ServingReport, serving: ServingResource
) -> dg.AssetCheckResult:
    """Warns when the latest day's p95 latency (all bundles) exceeds LLMOPS_WATCH_P95_MS."""
    latest = serving_metrics.latest
    if latest is None or latest.p95_latency_ms is None:
        return _no_data("no served traces loaded")
    return dg.AssetCheckResult(
        passed=latest.p95_latency_ms <= serving.p95_latency_ms,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"p95 {latest.p95_latency_ms:.0f} ms over {latest.requests} requests on "
        f"{latest.day} (limit {serving.p95_latency_ms:.0f} ms)",
        metadata={
            "day": latest.day,
            "p95_latency_ms": float(latest.p95_latency_ms),
            "limit_ms": float(serving.p95_latency_ms),
            "requests": latest.requests,
        },
    )


@dg.asset_check(asset=serving_metrics, description="thumbs-down rate within limit")
def thumbs_down_rate_within_limit(
    serving_metrics: ServingReport, serving: ServingResource
) -> dg.AssetCheckResult:
    """Warns when, on the latest day, the share of rated answers with a thumbs-down exceeds
    LLMOPS_WATCH_THUMBS_DOWN_RATE."""
    latest = serving_metrics.latest
    if latest is None or not latest.rated:
        return _no_data("no rated answers on the latest day")
    return dg.AssetCheckResult(
        passed=latest.thumbs_down_rate <= serving.max_thumbs_down_rate,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{latest.thumbs_down} of {latest.rated} rated answers thumbs-down on "
        f"{latest.day} (limit {serving.max_thumbs_down_rate:g})",
        metadata={
            "day": latest.day,
            "thumbs_down_rate": float(latest.thumbs_down_rate),
            "limit": float(serving.max_thumbs_down_rate),
            "rated": latest.rated,
        },
    )


@dg.asset_check(asset=serving_metrics, description="no-answer (no-hit) rate within limit")
def no_answer_rate_within_limit(
    serving_metrics: ServingReport, serving: ServingResource
) -> dg.AssetCheckResult:
    """Warns when, on the latest day, the share of requests answered without the documents
    (retrieval found nothing, or nothing relevant enough: the relevance refusal) exceeds
    LLMOPS_WATCH_NO_ANSWER_RATE."""
    latest = serving_metrics.latest
    if latest is None or not latest.requests:
        return _no_data("no served traces loaded")
    return dg.AssetCheckResult(
        passed=latest.no_answer_rate <= serving.max_no_answer_rate,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"no-answer rate {latest.no_answer_rate:.3f} (no hit {latest.no_hit_rate:.3f})"
        f" over {latest.requests} requests on {latest.day} (limit {serving.max_no_answer_rate:g})",
        metadata={
            "day": latest.day,
            "no_answer_rate": float(latest.no_answer_rate),
            "no_hit_rate": float(latest.no_hit_rate),
            "limit": float(serving.max_no_answer_rate),
            "requests": latest.requests,
        },
    )


@dg.asset_check(asset=serving_metrics, description="retrieval scores vs the champion's eval")
def retrieval_score_drift(
    serving_metrics: ServingReport, serving: ServingResource, mlflow: MlflowResource
) -> dg.AssetCheckResult:
    """Warns when the champion's served answers' mean top retrieval score (latest day it
    answered) moved by more than LLMOPS_WATCH_SCORE_DRIFT, relatively, from the mean its
    evaluation run logged (`retrieval.top_score_mean`): the index or the questions changed."""
    from llmops_dagster.evaluate.bundle_eval import TOP_SCORE_MEAN
    from llmops_dagster.rag.bundle import current_champion
    from llmops_dagster.serving.daily_report import score_drift

    client = mlflow.client()
    champion = current_champion(client)
    if champion is None:
        return _no_data("no champion bundle to compare with")
    if not champion.run_id:
        return _no_data(f"{champion.uri} records no evaluation run")
    evaluated = client.get_run(champion.run_id).data.metrics.get(TOP_SCORE_MEAN)
    if evaluated is None:
        return _no_data(
            f"the evaluation run {champion.run_id} of {champion.uri} logged no {TOP_SCORE_MEAN}"
        )
    drift = score_drift(serving_metrics, champion.version, evaluated, serving.max_score_drift)
    if drift is None:
        return _no_data(f"{champion.uri} has no served answers with retrieval hits")
    return dg.AssetCheckResult(
        passed=not drift.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=drift.describe(),
        metadata={
            "champion": champion.uri,
            "evaluation_run_id": champion.run_id,
            "day": drift.day,
            "served_top_score_mean": float(drift.served_mean),
            "served_answers": drift.served_n,
            "evaluated_top_score_mean": float(drift.evaluated_mean),
            "drift": float(drift.drift),
            "limit": float(drift.max_drift),
        },
    )


@dg.asset_check(asset=serving_metrics, description="the latest day's tokens and cost within budget")
def daily_spend_within_budget(
    serving_metrics: ServingReport, serving: ServingResource
) -> dg.AssetCheckResult:
    """Warns when the latest served day's prompt + completion tokens (LLMOPS_WATCH_DAILY_TOKENS)
    or cost (LLMOPS_WATCH_DAILY_COST_USD) crossed its budget; reports the spend either way."""
    from llmops_dagster.serving.budget import day_spend

    if serving.daily_token_budget is None and serving.daily_cost_budget_usd is None:
        return _no_data("no daily budget set (LLMOPS_WATCH_DAILY_TOKENS / _COST_USD)")
    spend = day_spend(
        serving_metrics.rows,
        token_budget=serving.daily_token_budget,
        cost_budget_usd=serving.daily_cost_budget_usd,
    )
    if spend is None:
        return _no_data("nothing served yet")
    metadata: dict[str, Any] = {
        "day": spend.day,
        "tokens": spend.tokens,
        "cost_usd": float(spend.cost_usd),
    }
    if spend.token_budget is not None:
        metadata["token_budget"] = spend.token_budget
    if spend.cost_budget_usd is not None:
        metadata["cost_budget_usd"] = float(spend.cost_budget_usd)
    return dg.AssetCheckResult(
        passed=not spend.over,
        severity=dg.AssetCheckSeverity.WARN,
        description=spend.describe(),
        metadata=metadata,
    )


SERVING_CHECKS = [
    daily_spend_within_budget,
    p95_latency_within_budget,
    thumbs_down_rate_within_limit,
    no_answer_rate_within_limit,
    retrieval_score_drift,
]


# --------------------------------------------------------------------------------------------
# Feedback candidates
# --------------------------------------------------------------------------------------------


@dg.asset(
    deps=[dg.AssetKey("serving_feedback")],
    group_name=GROUP,
    kinds={"duckdb", "python"},
    owners=["team:ml-platform"],
    pool=WAREHOUSE_WRITERS_POOL,
)
def feedback_candidates(
    context: dg.AssetExecutionContext,
    serving: ServingResource,
    datasets: DatasetsResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Answers with a thumbs-down or a correction, with question, answer, correction, cited
    chunks and bundle version, and their review status (`llmops.feedback_candidates` and a
    JSONL under LLMOPS_HOME/feedback). Read from the serving store, like `llmops-dagster
    feedback list`, so the reviewer and this table always agree; a person accepts or rejects
    them there, and only accepted ones reach the golden or training set. A restricted answer's
    row keeps its ids, counts and audience, its text withheld (the warehouse and this page are
    readable beyond its audience; the review commands on the server host show it)."""
    from pathlib import Path

    from llmops_dagster.serving.review import (
        FeedbackReview,
        write_candidates_jsonl,
        write_candidates_table,
    )

    review = FeedbackReview(
        Path(serving.store_path),
        Path(datasets.golden_path),
        Path(datasets.train_qa_path),
        train_groups=datasets.train_groups,
    )
    candidates = review.candidates()
    path = write_candidates_jsonl(candidates, Path(serving.candidates_path))
    with warehouse.get_connection() as con:
        write_candidates_table(con, candidates, CANDIDATES_TABLE)
    counts = {
        s: sum(c.status == s for c in candidates) for s in ("pending", "accepted", "rejected")
    }
    pending = [c for c in candidates if c.status == "pending"]
    context.log.info(f"{counts['pending']} feedback candidates await review")
    preview = [
        {
            "trace_id": c.trace_id,
            "bundle": c.bundle_version or "base",
            "down": c.thumbs_down,
            "question": c.question,
            "correction": c.correction or "",
        }
        for c in (p.published() for p in pending[:20])
    ]
    return dg.MaterializeResult(
        metadata={
            **{s: dg.MetadataValue.int(n) for s, n in counts.items()},
            "candidates": dg.MetadataValue.int(len(candidates)),
            "text_withheld": dg.MetadataValue.int(sum(c.restricted for c in candidates)),
            "path": dg.MetadataValue.path(str(path)),
            "table": CANDIDATES_TABLE,
            "pending_preview": md(
                preview, ["trace_id", "bundle", "down", "question", "correction"]
            ),
        }
    )
