"""The index load's fast paths send exactly what the plain paths sent.

``serialize_sources`` (orjson) against the client's stdlib serializer, and ``_vector_lists``
(numpy) against Arrow's ``to_pylist``: same numbers, same documents, and the documents orjson
would write differently keep the old path. ``Prefetch`` (the read-ahead thread) keeps order,
raises the source's own error, and stops when closed.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from elasticsearch.serializer import JsonSerializer

from llmops_dagster.search.sync import _vector_lists
from llmops_dagster.search.writer import Prefetch, bulk_actions, serialize_sources

pytestmark = pytest.mark.unit

STDLIB = JsonSerializer()


def _vector(seed: int) -> list[float]:
    values = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    values /= np.linalg.norm(values)
    values[:3] = [1e-6, -3.5e-8, 0.0]  # exponent notation differs between the encoders
    return values.astype(np.float64).tolist()


def _doc(chunk_id: str, **extra: object) -> dict[str, object]:
    return {
        "chunk_id": chunk_id,
        "doc_id": "scifact:1",
        "title": 'Naïve Bayes — 日本語 \u2028 "quoted" \\ back',
        "text": "Null hypothesis\ttab\nnew line \x00 control",
        "position": 3,
        "section": "",
        "updated_at": datetime(2026, 1, 2, tzinfo=UTC),
        "uri": None,
        "embedding": _vector(int(chunk_id[-1])),
        **extra,
    }


def _sources(docs: list[dict[str, object]]) -> list[object]:
    actions = serialize_sources(bulk_actions("idx", docs, ["gone"]), STDLIB)
    return [action.get("_source") for action in actions]


def test_orjson_bytes_parse_to_the_same_document_as_the_stdlib_serializer() -> None:
    docs = [_doc("c1"), _doc("c2", allowed_groups=["hr", "security"])]
    plain = [a["_source"] for a in bulk_actions("idx", docs)]
    fast = _sources(docs)
    assert all(isinstance(source, bytes) for source in fast[:2])
    assert fast[2] is None  # the delete carries no source
    for encoded, source in zip(fast[:2], plain, strict=True):
        assert json.loads(encoded) == json.loads(STDLIB.dumps(source))
    assert json.loads(fast[0])["embedding"] == docs[0]["embedding"]  # every float exact


def test_a_nan_vector_keeps_the_stdlib_encoding_instead_of_null() -> None:
    vector = _vector(1)
    vector[7] = float("nan")
    doc = _doc("c1", embedding=vector, title="no nulls here")
    source = next(a["_source"] for a in bulk_actions("idx", [doc]))
    (encoded,) = _sources([doc])[:1]
    assert encoded == STDLIB.dumps(source)
    assert b"NaN" in encoded and b"null" in encoded  # uri is None


def test_text_orjson_refuses_goes_through_the_stdlib_serializer() -> None:
    doc = _doc("c1", text="lone surrogate \ud800 here")
    source = next(a["_source"] for a in bulk_actions("idx", [doc]))
    (encoded,) = _sources([doc])[:1]
    assert encoded == STDLIB.dumps(source)


def test_vector_lists_equal_arrow_to_pylist_including_a_sliced_batch() -> None:
    rows = np.random.default_rng(3).standard_normal((7, 5)).astype(np.float32)
    column = pa.array(list(rows), pa.list_(pa.float32()))
    assert _vector_lists(column) == column.to_pylist()
    window = column.slice(2, 3)
    assert _vector_lists(window) == window.to_pylist()
    assert _vector_lists(window)[0][0] == float(rows[2, 0])


def test_vector_lists_leave_nulls_and_ragged_vectors_to_to_pylist() -> None:
    assert _vector_lists(pa.array([[1.0, 2.0], None], pa.list_(pa.float32()))) is None
    assert _vector_lists(pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32()))) is None
    assert _vector_lists(pa.array([[1.0, None]], pa.list_(pa.float32()))) is None
    assert _vector_lists(pa.array(["a"], pa.string())) is None


# --- the bulk load's read-ahead -------------------------------------------------------------------
class Boom(RuntimeError):
    pass


def test_prefetch_yields_every_item_in_order_from_its_own_thread() -> None:
    producers: list[str] = []

    def items():
        for i in range(1000):
            producers.append(threading.current_thread().name)
            yield i

    ahead = Prefetch(items(), depth=7)
    try:
        assert list(ahead) == list(range(1000))
    finally:
        ahead.close()
    assert set(producers) == {"bulk-prefetch"}


def test_prefetch_raises_the_source_error_itself_after_the_items_before_it() -> None:
    error = Boom("warehouse went away")

    def items():
        yield 1
        yield 2
        raise error

    ahead = Prefetch(items(), depth=10)
    seen: list[int] = []
    with pytest.raises(Boom) as caught:
        for item in ahead:
            seen.append(item)
    ahead.close()
    assert caught.value is error
    assert seen == [1, 2]


def test_prefetch_close_stops_the_producer_at_most_depth_items_ahead() -> None:
    produced: list[int] = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    ahead = Prefetch(endless(), depth=5)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    started = time.perf_counter()
    ahead.close()
    assert time.perf_counter() - started < 2.0
    assert not ahead._thread.is_alive()
    # 3 taken + 5 queued + 1 waiting to be queued when the stop came.
    assert len(produced) <= 9
