"""Online evaluation on real stores: served answers (MLflow traces + the serving store, written
as the server writes them, see ``test_serving_loop``) → ``serving_judgments`` for their day →
the warehouse table, MLflow assessments on exactly the judged traces, review candidates for low
scores, and the WARN check when a bundle version is made worse on purpose (its answers cite
nothing). No judge is configured here (LLMOPS_JUDGE none): the deterministic metric is what is
scored; the judge path is the offline evaluation's (``evaluate_rag``)."""

from __future__ import annotations

import json

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from assets.judgments import JUDGMENTS_TABLE, ONLINE_CHECK, serving_judgments
from assets.serving import build_serving_load_assets
from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.answer_log import AnswerRecord
from llmops_dagster.serving.judgment_sync import CODE_SOURCE
from llmops_dagster.serving.review import FeedbackReview
from tests.conftest import asset_metadata
from tests.integration.test_serving_loop import CHUNKS, World, _resources, _warehouse_rows
from tests.integration.test_serving_loop import world as world  # the fixture

pytestmark = pytest.mark.integration


def _judge(world: World, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [build_serving_load_assets(world.settings.warehouse_target()), serving_judgments],
        resources=_resources(world.settings),
        instance=instance,
        partition_key=world.day,
        selection=["serving_traces", "serving_feedback", "serving_judgments"],
    )
    assert result.success
    return result


def _serve_uncited(world: World, n: int) -> list[str]:
    """``n`` answers of bundle version 2, made worse on purpose: they cite nothing."""
    uri = world.settings.mlflow_uri
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(world.settings.serving.trace_experiment)
    ids: list[str] = []
    try:
        for i in range(n):
            question = f"Where do I file expenses, take {i}?"
            with mlflow.start_span("answer") as span:
                span.set_inputs({"question": question})
                mlflow.update_current_trace(
                    metadata={
                        keys.BUNDLE_VERSION: "2",
                        keys.CITED_CHUNK_IDS: "[]",
                        keys.RETRIEVED_CHUNK_IDS: json.dumps([c.chunk_id for c in CHUNKS]),
                        keys.NO_HIT: "false",
                        keys.TOTAL_MS: "100.0",
                        keys.REFUSED: "",
                    },
                    tags={keys.TAG_SOURCE: "serve"},
                )
                span.set_outputs({"answer": "Somewhere."})
                ids.append(span.trace_id)
            world.store.record_answer(
                AnswerRecord(trace_id=span.trace_id, question=question, answer="Somewhere.",
                             cited_chunk_ids=[], retrieved=list(CHUNKS), bundle_uri=None,
                             bundle_version="2", total_ms=100.0, prompt_tokens=10,
                             completion_tokens=2, cost_usd=0.0)
            )  # fmt: skip
        mlflow.flush_trace_async_logging()
    finally:
        mlflow.set_tracking_uri(previous)
    return ids


def _judged(world: World, trace_id: str) -> list[tuple[str, float | None, str]]:
    info = MlflowClient(world.settings.mlflow_uri).get_trace(trace_id).info
    return sorted(
        (a.name, a.value, a.source.source_id)
        for a in info.assessments or []
        if a.name.startswith("judge.")
    )


def test_served_answers_are_judged_assessed_and_low_ones_go_to_review(world: World) -> None:
    restricted = world.trace_ids[0] + "-r"
    world.store.record_answer(
        AnswerRecord(trace_id=restricted, question="Payroll of Q3?", answer="[secret]",
                     cited_chunk_ids=["c-exp"], retrieved=list(CHUNKS), bundle_uri=None,
                     bundle_version="1", total_ms=10.0, prompt_tokens=1, completion_tokens=1,
                     cost_usd=0.0, asker_groups=["finance"], audience=["finance"])
    )  # fmt: skip
    with dg.DagsterInstance.ephemeral() as instance:
        first = _judge(world, instance)
        meta = asset_metadata(first, "serving_judgments")
        # 8 served + 1 restricted; v1's refusal is sampled but not scored.
        assert (meta["answered"], meta["judged"], meta["refused"]) == (9, 8, 1)
        assert (meta["skipped_restricted"], meta["assessments"], meta["low_scored"]) == (1, 7, 1)
        assert meta["mean/1/citation_validity"] == 0.8  # 4 of 5 scored answers cite validly
        assert meta["mean/base/citation_validity"] == 1.0
        (check,) = first.get_asset_check_evaluations()
        assert (check.check_name, check.passed) == (ONLINE_CHECK, True)

        rows = _warehouse_rows(
            world.settings,
            f"SELECT trace_id, bundle_version, score FROM {JUDGMENTS_TABLE} ORDER BY trace_id",
        )
        scored = [t for n, t in enumerate(world.trace_ids) if n != 4]  # 4: the refusal
        assert sorted(r[0] for r in rows) == sorted(scored)
        by_trace = {r[0]: r[2] for r in rows}
        assert by_trace[world.trace_ids[5]] == 0.0  # no hit, cites nothing
        # Assessments on exactly the judged traces; none on the refusal or the restricted one.
        for trace_id in scored:
            expected = 0.0 if trace_id == world.trace_ids[5] else 1.0
            assert _judged(world, trace_id) == [("judge.citation_validity", expected, CODE_SOURCE)]
        assert _judged(world, world.trace_ids[4]) == []

        review = FeedbackReview(world.store.path, world.settings.corpus.golden_path,
                                world.settings.corpus.train_qa_path)  # fmt: skip
        low = review.candidate(world.trace_ids[5])
        assert low.judged_low == ["judge (code): citation_validity 0.00 < 0.5: cites no chunk"]
        assert low.thumbs_down == 0 and low.status == "pending"

        # Re-judging the day replaces: the same rows, one assessment per trace and name.
        _judge(world, instance)
        assert len(_warehouse_rows(world.settings, f"SELECT * FROM {JUDGMENTS_TABLE}")) == 7
        assert len(_judged(world, world.trace_ids[0])) == 1

        # A version made worse on purpose: its answers cite nothing → the check warns.
        worse = _serve_uncited(world, 3)
        warned = _judge(world, instance)
        (check,) = warned.get_asset_check_evaluations()
        assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
        assert check.description == (
            "bundle 2: online citation_validity 0.000 is more than 0.1 below 0.800 "
            "(the configured floor)"
        )
        assert {c.trace_id for c in review.candidates()} >= set(worse)
