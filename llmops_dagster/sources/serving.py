"""dlt source ``serving``: the served answers' MLflow traces and the users' feedback, into the
warehouse, incrementally and keyed (merge), so a re-run adds nothing and a changed feedback
replaces its row.

Two resources:

- ``serving_traces``: one row per MLflow trace of the trace experiment, the ``llmops.*`` trace
  metadata (:mod:`llmops_dagster.serving.trace_keys`) flattened into typed columns. Merged on
  ``trace_id``.
- ``serving_feedback``: the serving store's ``feedback`` table. Merged on ``(trace_id,
  user_id)``: a user's newer opinion replaces the old one, as it does in the store.

The warehouse is read beyond any answer's audience, so neither table carries a restricted
answer's text (:mod:`llmops_dagster.serving.disclosure`): the traces hold none already (the
server withholds it before writing them) and feedback on a restricted answer is loaded with its
correction and comment replaced by the ``[withheld: audience …]`` marker.

Why the cursor of traces is the *end* time (request time + duration), not the request time:
the server exports a trace when its answer is finished, so a slow answer that started first
becomes visible after a quick one that started later; a request-time cursor would already have
moved past it. Why the ``settle_s`` cut-off: traces are exported by a pool of background
threads and feedback rows are stamped just before they commit, so rows can become visible a
little out of order; loading only rows older than ``settle_s`` lets stragglers land before the
cursor passes them, without giving up dlt's exactly-once incremental (a lag window would reload
rows on every run).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dlt
from dlt.common.schema.typing import TTableSchemaColumns

from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.disclosure import PUBLIC_AUDIENCE, is_restricted, withheld

TRACES_TABLE = "serving_traces"
FEEDBACK_TABLE = "serving_feedback"
PAGE_SIZE = 500

# Declared up front so every column exists from the first load (dlt creates a column only when
# it sees a non-null value: a day without no-hit answers would otherwise lack `top_score`).
TRACE_COLUMNS: TTableSchemaColumns = {
    "trace_id": {"data_type": "text", "nullable": False},
    "request_time": {"data_type": "timestamp", "nullable": False},
    "end_time_ms": {"data_type": "bigint", "nullable": False},
    "day": {"data_type": "text", "nullable": False},
    "duration_ms": {"data_type": "double"},
    "state": {"data_type": "text"},
    "source": {"data_type": "text"},
    "bundle_uri": {"data_type": "text"},
    "bundle_version": {"data_type": "text"},
    "prompt_version": {"data_type": "text"},
    "prompt_uri": {"data_type": "text"},
    "model_id": {"data_type": "text"},
    "adapter_uri": {"data_type": "text"},
    "index_name": {"data_type": "text"},
    "embedding_model_id": {"data_type": "text"},
    "retrieval_mode": {"data_type": "text"},
    "retrieval_k": {"data_type": "bigint"},
    "prompt_tokens": {"data_type": "bigint"},
    "completion_tokens": {"data_type": "bigint"},
    "cost_usd": {"data_type": "double"},
    "top_score": {"data_type": "double"},
    "no_hit": {"data_type": "bool"},
    # "", "prompt_injection" or "nothing_relevant" (the relevance refusal: hits, none relevant)
    "refused": {"data_type": "text"},
    "cited_chunk_ids": {"data_type": "text"},
    "retrieved_chunk_ids": {"data_type": "text"},
    "retrieved_doc_ids": {"data_type": "text"},
    "cited_count": {"data_type": "bigint"},
    "retrieved_count": {"data_type": "bigint"},
    "total_ms": {"data_type": "double"},
    "queue_ms": {"data_type": "double"},
    "user": {"data_type": "text"},
    "audience": {"data_type": "text"},  # JSON list: who may read the answer
    "restricted": {"data_type": "bool"},  # its text was withheld from the trace
    # Replayed from the server's answer cache; null on traces of servers before the cache
    # (read as false). dlt adds the column to tables loaded before it existed.
    "cache_hit": {"data_type": "bool"},
}

FEEDBACK_COLUMNS: TTableSchemaColumns = {
    "trace_id": {"data_type": "text", "nullable": False},
    "user_id": {"data_type": "text", "nullable": False},
    "rating": {"data_type": "text", "nullable": False},
    "correction": {"data_type": "text"},
    "comment": {"data_type": "text"},
    "created_at": {"data_type": "text", "nullable": False},
    "updated_at": {"data_type": "text", "nullable": False},
    "audience": {"data_type": "text"},  # JSON list: who may read the answer rated
    "text_withheld": {"data_type": "bool"},
}


def _text(meta: Mapping[str, str], key: str) -> str | None:
    value = meta.get(key)
    return value if value else None


def _number(meta: Mapping[str, str], key: str, kind: type[int] | type[float]) -> Any:
    value = meta.get(key)
    if value is None or value == "":
        return None
    try:
        return kind(float(value)) if kind is int else float(value)
    except ValueError:
        return None  # a malformed value must not stop the load; the column stays empty


def _ids(meta: Mapping[str, str], key: str) -> list[str] | None:
    value = meta.get(key)
    if not value:
        return None
    try:
        loaded = json.loads(value)
    except ValueError:
        return None
    return [str(v) for v in loaded] if isinstance(loaded, list) else None


def trace_row(
    trace_id: str,
    request_time_ms: int,
    duration_ms: int | None,
    state: str,
    metadata: Mapping[str, str],
    tags: Mapping[str, str],
) -> dict[str, Any]:
    """One warehouse row from a trace's info (``TraceInfo`` fields, passed apart so the
    flattening is testable without MLflow)."""
    started = datetime.fromtimestamp(request_time_ms / 1000, tz=UTC)
    cited = _ids(metadata, keys.CITED_CHUNK_IDS)
    retrieved = _ids(metadata, keys.RETRIEVED_CHUNK_IDS)
    no_hit = metadata.get(keys.NO_HIT)
    restricted = metadata.get(keys.RESTRICTED)
    cache_hit = metadata.get(keys.CACHE_HIT)
    return {
        "trace_id": trace_id,
        "request_time": started,
        "end_time_ms": int(request_time_ms + (duration_ms or 0)),
        "day": started.date().isoformat(),
        "duration_ms": float(duration_ms) if duration_ms is not None else None,
        "state": state,
        "source": tags.get(keys.TAG_SOURCE),
        # "" is the base model (no bundle): kept as "", not null, so it groups as its own row.
        "bundle_uri": metadata.get(keys.BUNDLE_URI, ""),
        "bundle_version": metadata.get(keys.BUNDLE_VERSION, ""),
        "prompt_version": _text(metadata, keys.PROMPT_VERSION),
        "prompt_uri": _text(metadata, keys.PROMPT_URI),
        "model_id": _text(metadata, keys.MODEL_ID),
        "adapter_uri": _text(metadata, keys.ADAPTER_URI),
        "index_name": _text(metadata, keys.INDEX_NAME),
        "embedding_model_id": _text(metadata, keys.EMBEDDING_MODEL),
        "retrieval_mode": _text(metadata, keys.RETRIEVAL_MODE),
        "retrieval_k": _number(metadata, keys.RETRIEVAL_K, int),
        "prompt_tokens": _number(metadata, keys.PROMPT_TOKENS, int),
        "completion_tokens": _number(metadata, keys.COMPLETION_TOKENS, int),
        "cost_usd": _number(metadata, keys.COST_USD, float),
        "top_score": _number(metadata, keys.TOP_SCORE, float),
        "no_hit": None if no_hit is None else no_hit.lower() == "true",
        "refused": metadata.get(keys.REFUSED, ""),
        "cited_chunk_ids": json.dumps(cited) if cited is not None else None,
        "retrieved_chunk_ids": json.dumps(retrieved) if retrieved is not None else None,
        "retrieved_doc_ids": metadata.get(keys.RETRIEVED_DOC_IDS),
        "cited_count": len(cited) if cited is not None else None,
        "retrieved_count": len(retrieved) if retrieved is not None else None,
        "total_ms": _number(metadata, keys.TOTAL_MS, float),
        "queue_ms": _number(metadata, keys.QUEUE_MS, float),
        "user": _text(metadata, keys.USER),
        "audience": _text(metadata, keys.AUDIENCE),
        "restricted": None if restricted is None else restricted.lower() == "true",
        "cache_hit": None if cache_hit is None else cache_hit.lower() == "true",
    }


def _cutoff_ms(settle_s: float) -> int:
    return int((datetime.now(UTC).timestamp() - settle_s) * 1000)


@dlt.resource(
    name=TRACES_TABLE,
    write_disposition="merge",
    primary_key="trace_id",
    columns=TRACE_COLUMNS,
)
def serving_traces(
    tracking_uri: str,
    trace_experiment: str,
    settle_s: float = 60.0,
    end_time_ms: dlt.sources.incremental[int] = dlt.sources.incremental(  # noqa: B008
        "end_time_ms", initial_value=0
    ),
) -> Iterator[dict[str, Any]]:
    """Finished traces of ``trace_experiment`` that ended at or after the cursor and at least
    ``settle_s`` ago (in-progress traces have no end time and wait for the next run)."""
    from llmops_dagster.tracking.mlflow_store import mlflow_client

    client = mlflow_client(tracking_uri)
    experiment = client.get_experiment_by_name(trace_experiment)
    if experiment is None:
        return  # nothing served yet: the server creates the experiment with its first trace
    start, cutoff = int(end_time_ms.last_value or 0), _cutoff_ms(settle_s)
    # `>=` on the start: dlt drops the rows it already loaded at exactly the cursor value.
    where = f"trace.end_time_ms >= {start} AND trace.end_time_ms < {cutoff}"
    token: str | None = None
    while True:
        page = client.search_traces(
            locations=[experiment.experiment_id],
            filter_string=where,
            max_results=PAGE_SIZE,
            order_by=["timestamp_ms ASC"],
            page_token=token,
            include_spans=False,
        )
        for trace in page:
            info = trace.info
            yield trace_row(
                info.trace_id,
                int(info.request_time),
                info.execution_duration,
                str(info.state),
                info.trace_metadata or {},
                info.tags or {},
            )
        token = page.token
        if not token:
            return


@dlt.resource(
    name=FEEDBACK_TABLE,
    write_disposition="merge",
    primary_key=("trace_id", "user_id"),
    columns=FEEDBACK_COLUMNS,
)
def serving_feedback(
    store_path: str,
    settle_s: float = 60.0,
    updated_at: dlt.sources.incremental[str] = dlt.sources.incremental(  # noqa: B008
        "updated_at", initial_value=""
    ),
) -> Iterator[dict[str, Any]]:
    """Feedback rows updated since the cursor (ISO UTC strings sort like instants) and at least
    ``settle_s`` ago; a re-submitted opinion has a new ``updated_at`` and replaces its row."""
    from llmops_dagster.serving.answer_log import ServingStore

    path = Path(store_path)
    if not path.is_file():
        return  # the server has not answered anything yet
    cutoff = (datetime.now(UTC) - timedelta(seconds=settle_s)).isoformat(timespec="microseconds")
    last = updated_at.last_value or ""
    # The store's query is strict (`>`); stepping one character back keeps rows stamped exactly
    # at the cursor in the window, and dlt's incremental drops the ones it already loaded.
    since = last[:-1] if last else None
    store = ServingStore(path)
    records = [r for r in store.feedback_since(since) if r.updated_at < cutoff]
    audiences = store.audiences([r.trace_id for r in records])
    for record in records:
        yield feedback_row(record.to_dict(), audiences.get(record.trace_id))


def feedback_row(row: dict[str, Any], audience: list[str] | None) -> dict[str, Any]:
    """A feedback row as the warehouse holds it: on a restricted answer the user's correction
    and comment are withheld (the serving store keeps them)."""
    shown = list(audience or PUBLIC_AUDIENCE)
    hidden = is_restricted(shown)
    out = {**row, "audience": json.dumps(shown), "text_withheld": hidden}
    if hidden:
        for name in ("correction", "comment"):
            if out.get(name):
                out[name] = withheld(shown)
    return out


@dlt.source(name="serving", max_table_nesting=0)
def serving_source(
    tracking_uri: str, trace_experiment: str, store_path: str, settle_s: float = 60.0
) -> Any:
    """Both resources, bound to one MLflow store, trace experiment and serving store."""
    return (
        serving_traces(tracking_uri, trace_experiment, settle_s),
        serving_feedback(store_path, settle_s),
    )
