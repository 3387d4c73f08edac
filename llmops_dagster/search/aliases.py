"""Versioned physical indices behind one alias: zero-downtime rebuilds and rollback.

Readers and incremental writers only ever use the alias. A rebuild writes a brand-new physical
index ``<alias>-<UTC timestamp>-<digest8>``, verifies it (document count and a smoke query),
and then moves the alias in ONE ``update_aliases`` call, which Elasticsearch applies atomically:
there is no instant at which the alias points nowhere or at two indices. The live index is never
deleted first (a known mistake of peer projects); the previous ``keep`` versions stay for
:func:`rollback`. Any failure before the swap deletes the half-built index and leaves the alias
untouched.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions

from llmops_dagster.search.mapping import chunk_set_digest, index_meta
from llmops_dagster.search.writer import BulkReport, write_chunks

log = logging.getLogger(__name__)

#: ``_meta`` key of a shadow index: the alias it was built beside (removed on promotion).
SHADOW_OF = "shadow_of"
_VERSION_SUFFIX = re.compile(r"^-(\d{20})-([0-9a-f]{8})$")


class RebuildError(RuntimeError):
    """A rebuild failed verification; the alias was left as it was."""


class RollbackError(RuntimeError):
    """There is no earlier kept index to roll back to."""


@dataclass
class RebuildReport:
    """What a rebuild did; Dagster metadata and MLflow params come from this."""

    alias: str
    index: str
    previous_index: str | None
    count: int
    chunk_set_digest: str
    bulk: BulkReport
    deleted_indices: list[str] = field(default_factory=list)
    kept_indices: list[str] = field(default_factory=list)
    seconds_load: float = 0.0
    seconds_total: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "index": self.index,
            "previous_index": self.previous_index,
            "count": self.count,
            "chunk_set_digest": self.chunk_set_digest,
            "deleted_indices": self.deleted_indices,
            "kept_indices": self.kept_indices,
            "seconds_load": round(self.seconds_load, 3),
            "seconds_total": round(self.seconds_total, 3),
            "bulk": self.bulk.as_metadata(),
        }


def version_index_name(alias: str, digest: str | None = None, now: datetime | None = None) -> str:
    """``<alias>-<YYYYmmddHHMMSSffffff>-<digest8>``: lexicographic order == creation order.

    Microseconds in the timestamp keep two rebuilds in one second apart; the digest (of the
    chunk set when known, else random) makes the name say what is inside.
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S%f")
    suffix = (digest or uuid.uuid4().hex)[:8].lower()
    if not re.fullmatch(r"[0-9a-f]{8}", suffix):
        raise ValueError(f"digest must be hex, got {digest!r}")
    return f"{alias}-{stamp}-{suffix}"


def list_versions(client: Elasticsearch, alias: str) -> list[str]:
    """Physical indices of this alias, oldest first (by the sortable name).

    Matching the exact name pattern (not just the ``<alias>-`` prefix) keeps an alias ``docs``
    from claiming the indices of an alias ``docs-v2``.
    """
    found = client.indices.get_alias(
        index=f"{alias}-*", allow_no_indices=True, ignore_unavailable=True
    )
    names = [
        name
        for name in found.body
        if name.startswith(f"{alias}-") and _VERSION_SUFFIX.match(name[len(alias) :])
    ]
    return sorted(names)


def current_index(client: Elasticsearch, alias: str) -> str | None:
    """The physical index the alias points to (its write index), or ``None`` if no alias."""
    try:
        found = client.indices.get_alias(name=alias)
    except es_exceptions.NotFoundError:
        return None
    indices = sorted(found.body)
    if len(indices) == 1:
        return indices[0]
    writers = [
        name
        for name in indices
        if found.body[name].get("aliases", {}).get(alias, {}).get("is_write_index")
    ]
    return writers[0] if writers else indices[-1]


def alias_indices(client: Elasticsearch, alias: str) -> list[str]:
    """Every index the alias points to (normally exactly one)."""
    try:
        return sorted(client.indices.get_alias(name=alias).body)
    except es_exceptions.NotFoundError:
        return []


def point_alias(client: Elasticsearch, alias: str, index: str) -> list[str]:
    """Move the alias to ``index`` in one atomic ``update_aliases`` call; returns old targets."""
    old = alias_indices(client, alias)
    actions: list[dict[str, Any]] = [
        {"remove": {"index": name, "alias": alias}} for name in old if name != index
    ]
    actions.append({"add": {"index": index, "alias": alias, "is_write_index": True}})
    client.indices.update_aliases(actions=actions)
    return [name for name in old if name != index]


def _verify(
    client: Elasticsearch,
    index: str,
    expected_count: int,
    smoke_query_vector: Sequence[float] | None,
    smoke_query_text: str | None,
    vector_field: str,
) -> None:
    count = int(client.count(index=index)["count"])
    if count != expected_count:
        raise RebuildError(
            f"{index} holds {count} documents after the load, expected {expected_count}"
        )
    if expected_count == 0:
        return
    if smoke_query_vector is not None:
        vector = [float(x) for x in smoke_query_vector]
        response = client.search(
            index=index,
            knn={"field": vector_field, "query_vector": vector, "k": 1, "num_candidates": 10},
            size=1,
            source=False,
        )
        if not response["hits"]["hits"]:
            raise RebuildError(f"smoke kNN query on {index} returned no hits")
    if smoke_query_text is not None:
        response = client.search(
            index=index,
            query={"multi_match": {"query": smoke_query_text, "fields": ["title", "text"]}},
            size=1,
            source=False,
        )
        if not response["hits"]["hits"]:
            raise RebuildError(f"smoke BM25 query {smoke_query_text!r} on {index} found nothing")


def _delete_quietly(client: Elasticsearch, index: str) -> None:
    try:
        client.indices.delete(index=index, ignore_unavailable=True)
    except Exception:  # cleanup must not mask the original failure
        log.exception("could not delete half-built index %s", index)


def prune_versions(client: Elasticsearch, alias: str, keep: int) -> tuple[list[str], list[str]]:
    """Delete all but the live index and the ``keep`` newest other versions.

    Returns ``(kept_previous, deleted)``. An index the alias points to is never deleted.
    """
    live = set(alias_indices(client, alias))
    # A shadow index (built for a candidate embedding model, not yet promoted) is not an old
    # version: it waits for its evaluation; the retention of refused shadows drops it.
    others = [
        name
        for name in list_versions(client, alias)
        if name not in live and SHADOW_OF not in index_meta(client, name)
    ]
    # A rebuild interrupted so hard that it could not delete its own index (the cluster went
    # away mid-load) leaves an index without ``built_at``: never a rollback target, always junk.
    orphans = [name for name in others if "built_at" not in index_meta(client, name)]
    complete = [name for name in others if name not in orphans]
    kept = complete[-keep:] if keep > 0 else []
    deleted = [name for name in others if name not in kept]
    for name in deleted:
        client.indices.delete(index=name, ignore_unavailable=True)
    return kept, deleted


def _create_fresh_index(client: Elasticsearch, name: str, body: Mapping[str, Any]) -> None:
    """Create ``name``, a name this rebuild just made (microsecond stamp): when the client timed
    out on a create the cluster did carry out and retried it, the retry answers
    ``resource_already_exists_exception``. That index is our own, still empty: keep it rather
    than fail the rebuild (seen on a loaded 3-node cluster)."""
    try:
        client.indices.create(index=name, **body)
    except es_exceptions.BadRequestError as exc:
        if getattr(exc, "error", "") != "resource_already_exists_exception":
            raise
        client.indices.refresh(index=name)
        if client.count(index=name)["count"] != 0:
            raise
        log.warning("index %s already existed (a retried create): using it", name)


def rebuild(
    client: Elasticsearch,
    alias: str,
    docs: Iterable[Mapping[str, Any]],
    expected_count: int,
    index_body: Mapping[str, Any],
    *,
    smoke_query_vector: Sequence[float] | None = None,
    smoke_query_text: str | None = None,
    keep: int = 2,
    digest: str | None = None,
    vector_field: str = "embedding",
    bulk_options: Mapping[str, Any] | None = None,
    move_alias: bool = True,
    extra_meta: Mapping[str, Any] | None = None,
) -> RebuildReport:
    """Build a new physical index from ``docs``, verify it, then swap the alias atomically.

    ``index_body`` comes from :func:`~llmops_dagster.search.mapping.build_index_body`. The load
    runs with refresh off and no replicas (faster, and nothing reads the index yet); replicas and
    refresh are restored before verification. ``expected_count`` is the number of chunks the
    caller has; a different count after the load fails the rebuild. ``keep`` previous versions
    survive for rollback. On the first run (no alias yet) the alias is created.

    On ANY failure (a bulk error, an exception from the ``docs`` iterator, a failed check,
    Ctrl-C) the new index is deleted and the alias is not touched.

    ``move_alias=False`` builds and verifies the index beside the alias without moving it or
    pruning anything (a shadow index: :func:`build_shadow_index`); ``extra_meta`` is added to
    its ``_meta``.
    """
    started = time.perf_counter()
    previous = current_index(client, alias)
    name = version_index_name(alias, digest)
    body = {k: dict(v) if isinstance(v, Mapping) else v for k, v in index_body.items()}
    settings = dict(body.get("settings", {}))
    index_settings = dict(settings.get("index", settings))
    replicas = index_settings.get("number_of_replicas", 0)
    load_settings = {**index_settings, "number_of_replicas": 0, "refresh_interval": "-1"}
    body["settings"] = {"index": load_settings}
    chunk_ids: list[str] = []

    def remember_ids(stream: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        for doc in stream:
            chunk_ids.append(str(doc["chunk_id"]))
            yield doc

    _create_fresh_index(client, name, body)
    log.info("rebuild of %s: loading new index %s (previous %s)", alias, name, previous)
    try:
        load_started = time.perf_counter()
        bulk = write_chunks(client, name, remember_ids(docs), **dict(bulk_options or {}))
        seconds_load = time.perf_counter() - load_started
        client.indices.put_settings(
            index=name,
            settings={"index": {"number_of_replicas": replicas, "refresh_interval": None}},
        )
        client.indices.refresh(index=name)
        client.cluster.health(index=name, wait_for_status="yellow", timeout="60s")
        _verify(client, name, expected_count, smoke_query_vector, smoke_query_text, vector_field)
        full_digest = chunk_set_digest(chunk_ids)
        meta = dict(body.get("mappings", {}).get("_meta", {}))
        meta.update(
            {
                "chunk_set_digest": full_digest,
                "chunk_count": expected_count,
                "built_at": datetime.now(UTC).isoformat(),
                "alias": alias,
                **dict(extra_meta or {}),
            }
        )
        client.indices.put_mapping(index=name, meta=meta)
        if move_alias:
            point_alias(client, alias, name)
    except BaseException:
        log.error("rebuild of %s failed; deleting %s, alias left on %s", alias, name, previous)
        _delete_quietly(client, name)
        raise
    try:
        kept, deleted = prune_versions(client, alias, keep) if move_alias else ([], [])
    except es_exceptions.ApiError:
        # The swap already happened and is what matters; old versions are retried next time.
        log.warning("rebuild of %s: could not prune old versions", alias, exc_info=True)
        kept, deleted = [], []
    return RebuildReport(
        alias=alias,
        index=name,
        previous_index=previous,
        count=expected_count,
        chunk_set_digest=full_digest,
        bulk=bulk,
        deleted_indices=deleted,
        kept_indices=kept,
        seconds_load=seconds_load,
        seconds_total=time.perf_counter() - started,
    )


def rollback(client: Elasticsearch, alias: str) -> str:
    """Point the alias at the newest kept index older than the live one; returns its name.

    The index rolled back from is kept (it is simply the newest version now), so a mistaken
    rollback can be undone with :func:`point_alias`.
    """
    live = current_index(client, alias)
    if live is None:
        raise RollbackError(f"alias {alias!r} does not exist")
    older = [
        name
        for name in list_versions(client, alias)
        if name < live and "built_at" in index_meta(client, name)  # completed rebuilds only
    ]
    if not older:
        raise RollbackError(f"no index older than {live} is kept for alias {alias!r}")
    target = older[-1]
    point_alias(client, alias, target)
    log.info("rolled %s back from %s to %s", alias, live, target)
    return target


def build_shadow_index(
    client: Elasticsearch,
    alias: str,
    docs: Iterable[Mapping[str, Any]],
    expected_count: int,
    index_body: Mapping[str, Any],
    **kwargs: Any,
) -> RebuildReport:
    """A new verified ``<alias>-<stamp>-<digest8>`` index beside the alias, which does NOT move:
    the index of a candidate embedding model, searched only by its evaluation until a promotion
    points the alias at it. Its ``_meta`` says ``shadow_of: <alias>`` (besides ``model_id``,
    ``built_at``, ...); a failed build deletes it, like a rebuild. ``kwargs``: :func:`rebuild`'s."""
    return rebuild(
        client,
        alias,
        docs,
        expected_count,
        index_body,
        move_alias=False,
        extra_meta={SHADOW_OF: alias},
        **kwargs,
    )


def shadow_indices(client: Elasticsearch, alias: str) -> list[str]:
    """The shadow indices of ``alias`` (built beside it, never promoted), oldest first."""
    live = set(alias_indices(client, alias))
    return [
        name
        for name in list_versions(client, alias)
        if name not in live and index_meta(client, name).get(SHADOW_OF) == alias
    ]


def adopt_shadow(client: Elasticsearch, index: str) -> None:
    """Mark a promoted shadow as an ordinary version of its alias (prunable once replaced):
    ``shadow_of`` leaves its ``_meta``, ``promoted_at`` records when."""
    meta = index_meta(client, index)
    if SHADOW_OF not in meta:
        return
    alias = meta.pop(SHADOW_OF)
    meta.update({"promoted_at": datetime.now(UTC).isoformat(), "promoted_to": alias})
    client.indices.put_mapping(index=index, meta=meta)
