"""Bulk writes of chunk documents: upserts by ``chunk_id`` and deletes of removed chunks.

Why not ``helpers.bulk`` with its defaults: it raises ``BulkIndexError("N document(s) failed")``
at the first bad chunk of 500, hiding which documents failed and why, and stops loading the rest.
Here every action is sent (transient 429/5xx and timeouts are retried with backoff), failures are
collected per document, and only then does :func:`write_chunks` raise an :class:`IndexingError`
whose message names the first failing chunk ids with the error type and reason.

Stemmed shadow fields: an index built with ``_meta.text_stemming: python`` (a node without the
``english`` analyzer) holds ``title_stemmed``/``text_stemmed``; :func:`write_chunks` reads that
from the index it writes to and fills them, so every writer (rebuild, incremental sync,
benchmarks, tests) produces what the index's retriever queries. The stems derive from the
text, so the sync key (text hash + audience) and the embedding cache are unaffected.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions
from elasticsearch.helpers import streaming_bulk

from llmops_dagster.access import AUDIENCE_FIELD, normalize_audience
from llmops_dagster.search.mapping import TEXT_FIELDS, index_meta, text_stemming_of
from llmops_dagster.search.stemming import stem_text, stemmed_field

log = logging.getLogger(__name__)

#: Statuses worth retrying: back-pressure (429) and a node or proxy briefly unavailable.
RETRY_ON_STATUS: tuple[int, ...] = (429, 502, 503, 504)


@dataclass(frozen=True)
class BulkFailure:
    """One action Elasticsearch refused, with the cause it gave."""

    chunk_id: str
    op: str
    status: int
    error_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op} {self.chunk_id}: {self.status} {self.error_type}: {self.reason}"


@dataclass
class BulkReport:
    """Outcome of one bulk write; goes into Dagster metadata as is (``as_metadata``)."""

    index: str
    indexed: int = 0
    deleted: int = 0
    #: Deletes of ids that were not in the index: fine (already gone), counted for visibility.
    delete_not_found: int = 0
    failed: int = 0
    failures: list[BulkFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self, max_causes: int = 5) -> str:
        text = (
            f"{self.index}: {self.indexed} indexed, {self.deleted} deleted "
            f"({self.delete_not_found} already absent), {self.failed} failed"
        )
        if self.failures:
            shown = self.failures[:max_causes]
            causes = "; ".join(str(f) for f in shown)
            more = self.failed - len(shown)
            text += f". First causes: {causes}" + (f" (+{more} more)" if more > 0 else "")
        return text

    def as_metadata(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "indexed": self.indexed,
            "deleted": self.deleted,
            "delete_not_found": self.delete_not_found,
            "failed": self.failed,
            "first_failures": [str(f) for f in self.failures],
            "seconds": round(self.seconds, 3),
        }


class IndexingError(RuntimeError):
    """Some actions failed; raised after every other action was sent. Carries the report."""

    def __init__(self, report: BulkReport) -> None:
        super().__init__(report.summary())
        self.report = report


def to_es_document(doc: Mapping[str, Any], *, python_stemming: bool = False) -> dict[str, Any]:
    """A chunk dict (CONTRACTS "Elasticsearch document") as a JSON-ready ``_source``.

    The vector becomes a plain list of floats: numpy arrays are not JSON, and float32 values
    serialise with ~17 spurious digits otherwise (7 decimals keep float32 precision for unit
    vectors and halve the bulk payload). ``python_stemming`` adds the stemmed shadow of each
    text field the document has (``text`` → ``text_stemmed``).
    """
    if not doc.get("chunk_id"):
        raise ValueError(f"chunk document without chunk_id: keys {sorted(doc)}")
    source = dict(doc)
    embedding = source.get("embedding")
    if isinstance(embedding, np.ndarray):
        source["embedding"] = [float(x) for x in embedding.astype(np.float64).round(7)]
    elif embedding is not None:
        source["embedding"] = list(map(float, embedding))
    updated_at = source.get("updated_at")
    if updated_at is not None and hasattr(updated_at, "isoformat"):
        source["updated_at"] = updated_at.isoformat()
    # Every query filters on the audience, so a chunk without one would be invisible to all;
    # a writer that says nothing means public (benchmarks, tests, corpora without groups).
    source[AUDIENCE_FIELD] = normalize_audience(source.get(AUDIENCE_FIELD))
    if python_stemming:
        for name in TEXT_FIELDS:
            if name in source:
                source[stemmed_field(name)] = stem_text(source[name])
    return source


def index_uses_python_stemming(client: Elasticsearch, index: str) -> bool:
    """Whether ``index`` (or the index behind an alias) was built for Python-stemmed shadow
    fields. An index that does not exist yet has no such fields (a write would create it)."""
    try:
        return text_stemming_of(index_meta(client, index)) == "python"
    except es_exceptions.NotFoundError:
        return False


def bulk_actions(
    index: str,
    docs: Iterable[Mapping[str, Any]],
    delete_ids: Iterable[str] = (),
    *,
    python_stemming: bool = False,
) -> Iterator[dict[str, Any]]:
    """``index`` ops (``_id`` = chunk_id, full replace = upsert) then ``delete`` ops.

    Upserts go first and deletes last, so a changed document's new chunks are searchable before
    its old ones disappear (no window in which it has no chunks at all). Deletes are idempotent.
    """
    for doc in docs:
        source = to_es_document(doc, python_stemming=python_stemming)
        yield {"_op_type": "index", "_index": index, "_id": source["chunk_id"], "_source": source}
    for chunk_id in delete_ids:
        yield {"_op_type": "delete", "_index": index, "_id": chunk_id}


def _finite(value: Any) -> bool:
    """False where ``value`` holds a NaN/inf float (at any depth): orjson writes those as
    ``null`` where the stdlib writes ``NaN``; such a document keeps the stdlib path."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        if value and all(type(v) is float for v in value):
            try:  # a vector: one C call instead of 384 checks
                return math.isfinite(math.fsum(value))
            except (OverflowError, ValueError):
                return False
        return all(_finite(v) for v in value)
    return True


def serialize_sources(actions: Iterable[dict[str, Any]], fallback: Any) -> Iterator[dict[str, Any]]:
    """``actions`` with each ``_source`` already encoded to JSON bytes by orjson.

    Serialising the vectors was a quarter of a rebuild's time with the stdlib encoder (384
    floats of ~19 digits per chunk); orjson writes the same numbers (shortest round-trip
    repr: every value parses back to the identical float) about 10x faster, and the bulk
    helper forwards bytes as they are. What orjson refuses (lone surrogates, non-string keys,
    integers beyond 64 bits) or would write differently (NaN/inf as ``null``) goes through
    ``fallback`` (the client's serializer), so such a document is sent exactly as before.
    """
    for action in actions:
        source = action.get("_source")
        if isinstance(source, dict):
            try:
                encoded: bytes | None = orjson.dumps(source)
            except TypeError:
                encoded = None
            # ``null`` is rare (a missing title); only then can a NaN hide behind it.
            if encoded is not None and b"null" in encoded and not _finite(source):
                encoded = None
            action = {**action, "_source": encoded or fallback.dumps(source)}
        yield action


class Prefetch(Iterator[Any]):
    """Items of ``items`` produced by a background thread, at most ``depth`` ahead, in order.

    The bulk load alternated: read and encode 500 chunks, then wait for Elasticsearch to index
    them. With the reading and encoding (warehouse batches, ``to_es_document``, JSON) on this
    thread, they overlap the wait instead; the requests, their order and content are the same.
    An exception from ``items`` is raised, as is, where the consumer reaches it. ``close``
    (always call it) stops the thread; it is joined before ``close`` returns, so ``items`` (and
    the warehouse connection behind it) is never used by two threads at once.
    """

    _DONE = object()

    def __init__(self, items: Iterable[Any], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(
            target=self._produce, args=(iter(items),), name="bulk-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Raised(exc))
            return
        self._put(self._DONE)

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is self._DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Raised):
            self._finished = True
            raise item.exc
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class _Raised:
    exc: BaseException


def write_chunks(
    client: Elasticsearch,
    index: str,
    docs: Iterable[Mapping[str, Any]] = (),
    delete_ids: Iterable[str] = (),
    *,
    chunk_size: int = 500,
    max_chunk_bytes: int = 50 * 1024 * 1024,
    max_retries: int = 5,
    initial_backoff: float = 1.0,
    max_backoff: float = 30.0,
    request_timeout: float = 120.0,
    max_failures_kept: int = 10,
    require_alias: bool = False,
    refresh: bool = False,
    raise_on_failure: bool = True,
    python_stemming: bool | None = None,
) -> BulkReport:
    """Upsert ``docs`` and delete ``delete_ids`` in ``index`` (an index or a write alias).

    Incremental mode is this call against the live alias with ``require_alias=True``, so that a
    missing alias fails instead of auto-creating a concrete index named like the alias.
    Transient failures (429/502/503/504 per item or per request) are retried up to
    ``max_retries`` times with exponential backoff from ``initial_backoff``; request timeouts
    are retried by the transport (``retry_on_timeout``). An exception raised by the ``docs``
    iterator propagates as is (the caller decides what a half-written load means).

    Raises :class:`IndexingError` (after sending everything) when any action failed and
    ``raise_on_failure``; the report is on the exception.

    ``python_stemming`` ``None`` (default) reads the index's ``_meta.text_stemming``.
    """
    if python_stemming is None:
        python_stemming = index_uses_python_stemming(client, index)
    report = BulkReport(index=index)
    started = time.perf_counter()
    bulk_client = client.options(
        request_timeout=request_timeout, retry_on_timeout=True, max_retries=max_retries
    )
    kwargs: dict[str, Any] = {"require_alias": True} if require_alias else {}
    if refresh:
        kwargs["refresh"] = "wait_for"
    serializer = client.transport.serializers.get_serializer("application/json")
    actions = Prefetch(
        serialize_sources(
            bulk_actions(index, docs, delete_ids, python_stemming=python_stemming), serializer
        ),
        depth=chunk_size,
    )
    try:
        _collect(
            streaming_bulk(
                bulk_client,
                actions,
                chunk_size=chunk_size,
                max_chunk_bytes=max_chunk_bytes,
                raise_on_error=False,
                raise_on_exception=True,
                max_retries=max_retries,
                initial_backoff=initial_backoff,
                max_backoff=max_backoff,
                retry_on_status=RETRY_ON_STATUS,
                **kwargs,
            ),
            report,
            max_failures_kept,
        )
    finally:
        actions.close()
    report.seconds = time.perf_counter() - started
    if report.failed:
        log.warning("bulk write had failures: %s", report.summary())
        if raise_on_failure:
            raise IndexingError(report)
    return report


def _collect(
    results: Iterable[tuple[bool, dict[str, Any]]], report: BulkReport, max_failures_kept: int
) -> None:
    for ok, item in results:
        op, info = next(iter(item.items()))
        status = int(info.get("status", 500))
        if ok:
            if op == "delete":
                report.deleted += 1
            else:
                report.indexed += 1
            continue
        if op == "delete" and status == 404:
            report.delete_not_found += 1
            continue
        report.failed += 1
        if len(report.failures) < max_failures_kept:
            report.failures.append(_failure_from_item(op, info))


def _failure_from_item(op: str, info: Mapping[str, Any]) -> BulkFailure:
    error = info.get("error")
    if isinstance(error, Mapping):
        error_type = str(error.get("type", "unknown"))
        reason = str(error.get("reason", ""))
        caused_by = error.get("caused_by")
        if isinstance(caused_by, Mapping) and caused_by.get("reason"):
            reason += f" (caused by {caused_by.get('type')}: {caused_by.get('reason')})"
    else:  # a whole-request error the helper spread over the chunk's items
        exc = info.get("exception")
        error_type = type(exc).__name__ if exc is not None else "error"
        reason = str(error or "")
    if op == "delete" and info.get("result") == "not_found":
        error_type = "not_found"
    return BulkFailure(
        chunk_id=str(info.get("_id", "?")),
        op=op,
        status=int(info.get("status", 500)),
        error_type=error_type,
        reason=reason[:500],
    )
