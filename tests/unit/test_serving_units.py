"""Serving pieces without a server: prices, the answer/feedback store, the bundle swap, the
trace-drop counter and request checks."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import mlflow
import pytest

from llmops_dagster.rag.bundle import BundleVersion
from llmops_dagster.serving.answer_log import AnswerRecord, ServedChunk, ServingStore, UnknownTrace
from llmops_dagster.serving.bundles import BundleHolder, ServedBundle
from llmops_dagster.serving.pricing import PriceTable, PriceTableError
from llmops_dagster.serving.service import AnswerService, BadRequest
from llmops_dagster.serving.tracing import (
    _DROP_MESSAGES,
    _EXPORT_LOGGERS,
    TraceContext,
    TraceExportWatch,
)
from tests.support.stubs import rag_bundle

pytestmark = pytest.mark.unit


# --- prices -------------------------------------------------------------------------------------
def test_price_table_costs(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-x": {"input_per_1m": 0.15, "output_per_1m": 0.6}}))
    table = PriceTable.load(path)
    # 1,000 prompt tokens at $0.15/M + 200 completion tokens at $0.60/M
    assert table.cost("gpt-x", 1000, 200, local=False) == 0.00027
    assert table.cost("gpt-x", 1000, 200, local=True) == 0.0  # run here: no per-token price
    assert table.cost("unpriced", 1000, 200, local=False) is None
    assert PriceTable.load(None).cost("SmolLM2", 10, 10, local=True) == 0.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not JSON"),
        ("[1]", "must be an object"),
        ('{"m": {"input_per_1m": 1}}', "'m' needs numeric input_per_1m and output_per_1m"),
        ('{"m": {"input_per_1m": "x", "output_per_1m": 1}}', "needs numeric"),
    ],
)
def test_bad_price_tables_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(PriceTableError, match=message):
        PriceTable.load(path)


def test_missing_price_table_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="LLMOPS_PRICE_TABLE"):
        PriceTable.load(tmp_path / "nope.json")


# --- the store ----------------------------------------------------------------------------------
def _record(trace_id: str, **changes: Any) -> AnswerRecord:
    values: dict[str, Any] = {
        "trace_id": trace_id,
        "question": "q?",
        "answer": "a.",
        "cited_chunk_ids": ["c1"],
        "retrieved": [ServedChunk("c1", "d1", "T", 0.5), ServedChunk("c2", "d2", "U", 0.25)],
        "bundle_uri": "models:/b/1",
        "bundle_version": "1",
        "total_ms": 12.5,
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "cost_usd": 0.0,
    }
    return AnswerRecord(**(values | changes))


def test_store_answers_and_idempotent_feedback(tmp_path: Path) -> None:
    store = ServingStore(tmp_path / "s" / "serving.db")
    store.record_answer(_record("tr-1"))
    store.record_answer(_record("tr-2", retrieved=[], cited_chunk_ids=[], cost_usd=None))
    row = store.answer("tr-1")
    assert row is not None
    assert (row["top_score"], row["no_hit"], row["cited_chunk_ids"]) == (0.5, False, ["c1"])
    assert row["retrieved"][1] == {"chunk_id": "c2", "doc_id": "d2", "title": "U", "score": 0.25}
    empty = store.answer("tr-2")
    assert empty is not None and (empty["top_score"], empty["no_hit"]) == (None, True)
    assert empty["cost_usd"] is None
    assert store.count_answers() == 2

    first, change = store.record_feedback("tr-1", "ana", "down", correction="b.")
    assert change == "created" and first.created_at == first.updated_at
    same, change = store.record_feedback("tr-1", "ana", "down", correction="b.")
    assert change == "unchanged" and same == first
    updated, change = store.record_feedback("tr-1", "ana", "up")
    assert change == "updated" and updated.created_at == first.created_at
    assert updated.updated_at > first.updated_at and updated.correction is None
    store.record_feedback("tr-1", "bo", "down")
    assert [(f.user_id, f.rating) for f in store.feedback_for("tr-1")] == [
        ("ana", "up"),
        ("bo", "down"),
    ]
    assert [f.user_id for f in store.feedback_since(first.updated_at)] == ["ana", "bo"]
    assert store.feedback_since(store.feedback_for("tr-1")[1].updated_at) == []


def test_feedback_on_unknown_trace_or_bad_rating_stores_nothing(tmp_path: Path) -> None:
    store = ServingStore(tmp_path / "serving.db")
    with pytest.raises(UnknownTrace):
        store.record_feedback("tr-missing", "ana", "up")
    store.record_answer(_record("tr-1"))
    with pytest.raises(ValueError, match="rating must be 'up' or 'down'"):
        store.record_feedback("tr-1", "ana", "meh")  # type: ignore[arg-type]
    assert store.feedback_since(None) == []


def test_duplicate_trace_id_is_refused(tmp_path: Path) -> None:
    import sqlite3

    store = ServingStore(tmp_path / "serving.db")
    store.record_answer(_record("tr-1"))
    with pytest.raises(sqlite3.IntegrityError):
        store.record_answer(_record("tr-1", answer="other"))
    assert store.answer("tr-1")["answer"] == "a."  # type: ignore[index]


# --- the bundle swap ----------------------------------------------------------------------------
def _version(number: str) -> BundleVersion:
    bundle = rag_bundle(retrieval_mode="bm25", embedding_model_id="e", index_name="i-1",
                        index_alias="i")  # fmt: skip
    return BundleVersion("llmops-rag-bundle", number, bundle, f"run-{number}", {})


def _served(version: BundleVersion | None) -> ServedBundle:
    context = TraceContext("", "", "", "", "i", "", "e")
    return ServedBundle(pipeline=object(), version=version, context=context, local=True)


def test_holder_follows_the_alias_and_keeps_serving_on_errors() -> None:
    alias: dict[str, BundleVersion | None] = {"champion": None}
    loads: list[str | None] = []

    def loader(version: BundleVersion | None) -> ServedBundle:
        loads.append(version.version if version else None)
        if version is not None and version.version == "3":
            raise RuntimeError("adapter download failed")
        return _served(version)

    holder = BundleHolder(lambda: alias["champion"], loader, poll_s=0.01)
    assert holder.refresh() is True and holder.current.uri is None  # base model first
    assert holder.refresh() is False and loads == [None]  # unchanged alias: no reload
    alias["champion"] = _version("2")
    before = holder.current
    assert holder.refresh() is True
    assert before.uri is None  # a request holding the old bundle keeps it whole
    assert holder.current.uri == "models:/llmops-rag-bundle/2" and holder.swaps == 1

    alias["champion"] = _version("3")  # a broken version: the poll thread keeps the old one
    holder.start()
    try:
        deadline = threading.Event()
        for _ in range(500):
            if holder.load_errors:
                break
            deadline.wait(0.01)
    finally:
        holder.stop()
    assert holder.load_errors >= 1 and "adapter download failed" in (holder.last_error or "")
    assert holder.current.number == "2" and holder.swaps == 1


def test_holder_without_a_load_says_so() -> None:
    holder = BundleHolder(lambda: None, _served)
    with pytest.raises(RuntimeError, match="no bundle loaded yet"):
        holder.current  # noqa: B018 - the property raises


# --- trace drops --------------------------------------------------------------------------------
def test_export_watch_counts_mlflow_drop_warnings() -> None:
    watch = TraceExportWatch().install()
    try:
        exporter = logging.getLogger("mlflow.tracing.export.mlflow_v3")
        exporter.warning("Failed to send trace to MLflow backend: connection refused")
        logging.getLogger("mlflow.tracing.export.async_export_queue").warning(
            "Trace export queue is full, trace will be discarded. ..."
        )
        exporter.warning("Failed to link prompts to trace: x")  # not a lost trace
        exporter.info("Failed to send trace (info level is not a drop)")
    finally:
        watch.uninstall()
    assert watch.dropped == 2


def test_watched_messages_are_the_ones_mlflow_logs() -> None:
    """Pins the MLflow wording the drop counter relies on: an upgrade that rewords them fails
    here instead of silently zeroing the counter."""
    root = Path(mlflow.__file__).parent / "tracing" / "export"
    sources = {
        name: (root / f"{name.rsplit('.', 1)[1]}.py").read_text() for name in _EXPORT_LOGGERS
    }
    assert f"{_DROP_MESSAGES[0]} to MLflow backend:" in sources[_EXPORT_LOGGERS[0]]
    assert _DROP_MESSAGES[1] in sources[_EXPORT_LOGGERS[1]]


# --- request checks -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"text": "x"}, "cannot filter on text"),
        ({"content_hash": "x"}, "cannot filter on content_hash"),
        ({"source": ""}, "needs a non-empty string"),
        ({"source": []}, "needs a non-empty string"),
    ],
)
def test_bad_filters_are_refused(filters: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        AnswerService.check_filters(None, filters)  # type: ignore[arg-type]


def test_good_filters_pass_through() -> None:
    assert AnswerService.check_filters(None, {"source": ["fs", "api"]}) == {  # type: ignore[arg-type]
        "source": ["fs", "api"]
    }
    assert AnswerService.check_filters(None, None) is None  # type: ignore[arg-type]


def test_the_store_keeps_whether_citations_were_inferred_and_upgrades_an_older_file(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "serving.db"
    old = sqlite3.connect(path)  # a store written before the column existed
    old.execute("CREATE TABLE answers (trace_id TEXT PRIMARY KEY, created_at TEXT NOT NULL,"
                " bundle_uri TEXT, bundle_version TEXT, question TEXT NOT NULL,"
                " answer TEXT NOT NULL, cited_chunk_ids TEXT NOT NULL, retrieved TEXT NOT NULL,"
                " top_score REAL, no_hit INTEGER NOT NULL, total_ms REAL NOT NULL,"
                " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
                " cost_usd REAL, asker_groups TEXT NOT NULL DEFAULT '[]')")  # fmt: skip
    old.close()
    store = ServingStore(path)
    store.record_answer(_record("t-inferred", citations_inferred=True))
    store.record_answer(_record("t-model"))
    assert store.answer("t-inferred")["citations_inferred"] is True
    assert store.answer("t-model")["citations_inferred"] is False
