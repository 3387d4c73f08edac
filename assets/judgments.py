"""``serving_judgments``: each day's production answers judged like golden cases (online
evaluation, :mod:`llmops_dagster.evaluate.online`).

Daily partitions: a day can be judged, re-judged (the same reproducible sample) or backfilled
from the UI. Per partition the asset samples the day's served answers per bundle version, scores
them (citation validity; the judge's answer relevancy and faithfulness when a judge is
configured), and writes the scores three ways: the ``llmops.serving_judgments`` table (the day's
rows replaced), MLflow assessments on exactly those traces (source: the judge with its model id,
or ``CODE`` for a deterministic metric; a re-judged trace's earlier assessments of the same name
and source are replaced), and review candidates for answers scoring below ``low_score`` (the
``llmops-dagster feedback list / accept / reject`` commands handle them like a thumbs-down). A
WARN check compares each bundle version's online means with the champion's offline scores (or a
floor where the offline evaluation has no such metric).
"""

from typing import Any

import dagster as dg
from pydantic import Field

from assets._metadata import md
from assets.ingest import WAREHOUSE_WRITERS_POOL
from llmops_dagster.resources import (
    DatasetsResource,
    MlflowResource,
    ModelsResource,
    ServingResource,
    WarehouseResource,
)

JUDGMENTS_TABLE = "llmops.serving_judgments"
ONLINE_CHECK = "online_quality_vs_champion"
#: Days to judge start here; earlier days have no partition (none of this project's servers
#: answered before it). A partition per day up to today (end_offset 1: today's, so far).
SERVING_DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)


class JudgmentConfig(dg.Config):
    per_version: int = Field(default=20, ge=1)
    """Answers judged per bundle version and day (a reproducible, stratified sample)."""
    low_score: float = 0.5
    """An answer scoring below this on any metric becomes a review candidate."""
    margin: float = 0.1
    """WARN when a version's online mean is more than this below its reference."""
    floors: dict[str, float] = Field(default_factory=lambda: {"citation_validity": 0.8})
    """References of metrics the offline evaluation does not score."""
    judge: str | None = None
    """none | local | openai; default: the models resource's judge (LLMOPS_JUDGE)."""


def _day_traces(warehouse: WarehouseResource, day: str) -> tuple[frozenset[str], int]:
    """Trace ids the guardrails refused on ``day``, and how many traces the day has (from the
    loaded ``serving_traces``: the refusal is recorded there, not in the serving store)."""
    from llmops_dagster.warehouse import table_exists

    dataset = warehouse.dlt_dataset
    with warehouse.get_connection() as con:
        if not table_exists(con, dataset, "serving_traces"):
            return frozenset(), 0
        rows = con.fetchall(
            f'SELECT trace_id, refused FROM "{dataset}".serving_traces WHERE day = ?', [day]
        )
    return frozenset(str(t) for t, refused in rows if refused), len(rows)


def _chunk_texts(warehouse: WarehouseResource, chunk_ids: set[str]) -> dict[str, str]:
    from llmops_dagster.chunks.chunk_table import CHUNKS_TABLE

    if not chunk_ids:
        return {}
    wanted = sorted(chunk_ids)
    with warehouse.get_connection() as con:
        if not con.table_exists("llmops", "chunks"):
            return {}
        marks = ", ".join("?" * len(wanted))
        rows = con.fetchall(
            f"SELECT chunk_id, text FROM {CHUNKS_TABLE} WHERE chunk_id IN ({marks})", wanted
        )
    return {str(c): str(t) for c, t in rows}


def _write_table(warehouse: WarehouseResource, day: str, rows: list[list[Any]]) -> None:
    from llmops_dagster.evaluate.online import JUDGMENT_COLUMNS

    columns = ", ".join(f"{name} {kind}" for name, kind in JUDGMENT_COLUMNS.items())
    marks = ", ".join("?" * len(JUDGMENT_COLUMNS))
    with warehouse.get_connection() as con, con.transaction():
        con.execute(f"CREATE TABLE IF NOT EXISTS {JUDGMENTS_TABLE} ({columns})")
        con.execute(f"DELETE FROM {JUDGMENTS_TABLE} WHERE day = ?", [day])
        if rows:
            con.executemany(f"INSERT INTO {JUDGMENTS_TABLE} VALUES ({marks})", rows)


def _champion_offline(mlflow: MlflowResource) -> tuple[dict[str, float], str | None]:
    """The champion's offline means of the online judge metrics, and its URI."""
    from llmops_dagster.evaluate.online import ONLINE_JUDGE_METRICS
    from llmops_dagster.rag.bundle import current_champion

    client = mlflow.client()
    champion = current_champion(client)
    if champion is None or not champion.run_id:
        return {}, None if champion is None else champion.uri
    logged = client.get_run(champion.run_id).data.metrics
    return {m: float(logged[m]) for m in ONLINE_JUDGE_METRICS if m in logged}, champion.uri


@dg.asset(
    deps=[dg.AssetKey("serving_traces")],
    partitions_def=SERVING_DAYS,
    group_name="serve",
    kinds={"python", "mlflow"},
    owners=["team:ml-platform"],
    pool=WAREHOUSE_WRITERS_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            ONLINE_CHECK,
            asset="serving_judgments",
            description="each bundle version's online scores vs the champion's offline ones",
        )
    ],
)
def serving_judgments(
    context: dg.AssetExecutionContext,
    config: JudgmentConfig,
    serving: ServingResource,
    datasets: DatasetsResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    models: ModelsResource,
) -> dg.MaterializeResult:
    """A reproducible sample of the day's served answers per bundle version, judged with the
    offline evaluation's judge and deterministic metrics: `llmops.serving_judgments`, MLflow
    assessments on those traces, review candidates below `low_score`, and a WARN check
    against the champion's offline scores. Restricted answers are never judged (counted)."""
    from pathlib import Path

    from llmops_dagster.evaluate.candidate import judge_spec_for_run
    from llmops_dagster.evaluate.judge import build_judge
    from llmops_dagster.evaluate.online import (
        judge_answers,
        low_scores,
        online_warnings,
        sample_day,
        version_means,
    )
    from llmops_dagster.serving.answer_log import ServingStore
    from llmops_dagster.serving.judgment_sync import log_judgments
    from llmops_dagster.serving.review import FeedbackReview

    day = context.partition_key
    refused, traced = _day_traces(warehouse, day)
    store = ServingStore(Path(serving.store_path))
    # created_at is an ISO timestamp: everything after the day's date string starts that day.
    sample = sample_day(
        store.answers_since(day), day, per_version=config.per_version, refused=refused
    )
    texts = _chunk_texts(warehouse, {c for a in sample.chosen for c in a.retrieved_chunk_ids})
    answers = [a.with_context(texts) for a in sample.chosen]
    spec = judge_spec_for_run(models.judge_spec(), kind=config.judge)
    local = models.for_evaluation().generator() if spec.kind == "local" else None
    judge = build_judge(spec, generator=local)
    context.log.info(
        f"{day}: judging {len(answers)} of {sample.answered} answers "
        f"({sample.skipped_restricted} restricted, not judged) with judge {spec.kind}"
    )
    judgments, result = judge_answers(answers, judge=judge, judge_capable=spec.capable)
    _write_table(warehouse, day, [j.to_row() for j in judgments])
    written = log_judgments(mlflow.store().tracking_uri, judgments)
    low = low_scores(judgments, config.low_score)
    judge_name = (result.judge if result is not None else None) or "code"
    review = FeedbackReview(
        Path(serving.store_path),
        Path(datasets.golden_path),
        Path(datasets.train_qa_path),
        train_groups=datasets.train_groups,
    )
    flagged = review.record_judged_low(low, judge_name)

    means = version_means(judgments)
    offline, champion_uri = _champion_offline(mlflow)
    warnings = online_warnings(means, offline=offline, floors=config.floors, margin=config.margin)
    check = dg.AssetCheckResult(
        check_name=ONLINE_CHECK,
        passed=not warnings,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(w.describe() for w in warnings)
        or f"{len(means)} bundle version(s) within {config.margin:g} of their references",
        metadata={
            "champion": champion_uri or "none",
            "warnings": len(warnings),
            **{f"offline/{m}": float(v) for m, v in offline.items()},
        },
    )
    numbers = {
        f"mean/{version}/{metric}": float(value)
        for version, metrics in means.items()
        for metric, value in metrics.items()
    }
    preview = [
        {"trace_id": j.trace_id, "bundle": j.bundle_version, "metric": j.metric,
         "score": "" if j.score is None else round(j.score, 3), "judge": j.judge}
        for j in judgments[:30]
    ]  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "day": day,
            "answered": sample.answered,
            "traced": traced,
            "judged": len(answers),
            "refused": sum(a.refused for a in answers),
            "skipped_restricted": sample.skipped_restricted,
            "share_judged": round(sample.share_judged, 4),
            "assessments": written,
            "low_scored": flagged,
            "judge": judge_name,
            "table": JUDGMENTS_TABLE,
            **numbers,
            "preview": md(preview, ["trace_id", "bundle", "metric", "score", "judge"]),
        },
        check_results=[check],
    )
