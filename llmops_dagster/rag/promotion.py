"""Promotion that moves the champion bundle and the search alias together (and rollback).

A bundle evaluated on a shadow index (another embedding model's, built beside the live alias)
only answers as evaluated once the alias points at that index: moving ``@champion`` alone would
serve it on the old model's index, moving the alias alone would serve the old champion on the
new one. The two systems have no shared transaction, so the order is chosen to make every
failure recoverable:

1. the compare-and-set check of the champion (nothing moves for a stale decision);
2. the Elasticsearch alias is pointed at the shadow in one atomic ``update_aliases`` call;
3. MLflow's ``@champion`` moves; if that fails, the alias is pointed back and the error raised.

Between 2 and 3 the old champion answers on the new index, which is safe because the retriever
embeds every query with the model of the index it searches (``search.retriever``): a search
never mixes two models' vectors and never fails. The promoted version records the index it
replaced (:data:`TAG_INDEX_REPLACED`), and :func:`rollback_with_index` points the alias back
there with the champion. Dagster-free: ``champion_model`` and the ``bundle`` CLI both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from llmops_dagster.evaluate import gate
from llmops_dagster.rag.bundle import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_BUNDLE_MODEL,
    TAG_BASELINE_VERSION,
    TAG_OUTCOME,
    AliasMove,
    BundleError,
    RagBundle,
    RollbackError,
    approve_bundle,
    current_alias_version,
    load_bundle,
    promote_decided,
    rollback_bundle,
)

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from mlflow import MlflowClient

#: On a version promoted with its index: the physical index the alias pointed at before.
TAG_INDEX_REPLACED = "index.replaced"
#: On a version promoted with its index: the physical index the alias was pointed at.
TAG_INDEX_PROMOTED = "index.promoted"

T = TypeVar("T")


class PromotionError(BundleError):
    """The index a promotion needs is missing or does not hold the bundle's model; nothing
    moved."""


@dataclass(frozen=True)
class IndexMove:
    alias: str
    previous_index: str
    new_index: str


@dataclass(frozen=True)
class Promotion:
    """What moved: the bundle alias, and the search alias when the bundle needed its index."""

    bundle: AliasMove
    index: IndexMove | None = None


def _model_of(es: Elasticsearch, index: str) -> str | None:
    from llmops_dagster.search.mapping import index_meta

    if not es.indices.exists(index=index):
        return None
    return str(index_meta(es, index).get("model_id") or "") or None


def index_change(es: Elasticsearch, alias: str, bundle: RagBundle) -> IndexMove | None:
    """The alias move serving ``bundle`` as evaluated needs: None when the live index already
    holds the bundle's embedding model (a reindex may have renamed it: that is no change);
    else live → the bundle's index, which must exist and hold that model."""
    from llmops_dagster.search.aliases import current_index

    live = current_index(es, alias)
    if live is None or live == bundle.index_name:
        return None
    if _model_of(es, live) == bundle.embedding_model_id:
        return None
    found = _model_of(es, bundle.index_name)
    if found != bundle.embedding_model_id:
        problem = "is gone" if found is None else f"holds {found}"
        raise PromotionError(
            f"the bundle answers with {bundle.embedding_model_id} on {bundle.index_name}, which "
            f"{problem}; the live index {live} holds another model: nothing moved"
        )
    return IndexMove(alias, live, bundle.index_name)


def _moving_both(es: Elasticsearch, move: IndexMove, mlflow_step: Callable[[], T]) -> T:
    """Point the alias, then run the MLflow step; a failed step points the alias back."""
    from llmops_dagster.search.aliases import adopt_shadow, point_alias

    point_alias(es, move.alias, move.new_index)
    try:
        result = mlflow_step()
    except BaseException:
        point_alias(es, move.alias, move.previous_index)
        raise
    adopt_shadow(es, move.new_index)  # a promoted shadow is an ordinary version from now on
    return result


def _tag_index_move(client: MlflowClient, name: str, version: str, move: IndexMove) -> None:
    client.set_model_version_tag(name, version, TAG_INDEX_REPLACED, move.previous_index)
    client.set_model_version_tag(name, version, TAG_INDEX_PROMOTED, move.new_index)


def promote_with_index(
    client: MlflowClient,
    es: Elasticsearch,
    alias: str,
    name: str,
    version: str | int,
    *,
    outcome: str,
    baseline_version: str | None,
    evaluation_run_id: str,
    decision_summary: str,
    decision_tags: Mapping[str, str] | None = None,
) -> Promotion:
    """:func:`~llmops_dagster.rag.bundle.promote_decided`, moving the search alias to the
    bundle's index too when it is a champion on another model's index (module docstring)."""
    version = str(version)

    def decided() -> AliasMove:
        return promote_decided(
            client,
            name,
            version,
            outcome=outcome,
            baseline_version=baseline_version,
            evaluation_run_id=evaluation_run_id,
            decision_summary=decision_summary,
            decision_tags=decision_tags,
        )

    if outcome != "champion":
        return Promotion(decided())
    move = index_change(es, alias, load_bundle(client, f"models:/{name}/{version}").bundle)
    if move is None or current_alias_version(client, name, CHAMPION) != baseline_version:
        # No index to move, or a stale decision: promote_decided moves (or refuses) alone.
        return Promotion(decided())
    _tag_index_move(client, name, version, move)
    return Promotion(_moving_both(es, move, decided), move)


def approve_with_index(
    client: MlflowClient,
    es: Elasticsearch,
    alias: str,
    name: str,
    version: str | int,
    *,
    approver: str,
) -> Promotion:
    """:func:`~llmops_dagster.rag.bundle.approve_bundle`, moving the search alias with it."""
    found = load_bundle(client, f"models:/{name}/{version}")
    baseline = found.tags.get(TAG_BASELINE_VERSION) or None
    approvable = (
        found.tags.get(TAG_OUTCOME) == "awaiting_approval"
        and TAG_BASELINE_VERSION in found.tags
        and current_alias_version(client, name, CHAMPION) == baseline
    )
    move = index_change(es, alias, found.bundle) if approvable else None
    if move is None:  # nothing to move, or approve_bundle refuses with its own reason
        return Promotion(approve_bundle(client, name, found.version, approver=approver))
    _tag_index_move(client, name, found.version, move)
    approved = _moving_both(
        es, move, lambda: approve_bundle(client, name, found.version, approver=approver)
    )
    return Promotion(approved, move)


def rollback_with_index(
    client: MlflowClient, es: Elasticsearch, alias: str, name: str = DEFAULT_BUNDLE_MODEL
) -> Promotion:
    """:func:`~llmops_dagster.rag.bundle.rollback_bundle`; when the restored bundle's embedding
    model is not the live index's, the alias goes back too: to the index the current champion
    replaced (else the restored bundle's). :class:`RollbackError` when that index is gone or
    holds another model — then nothing moves."""
    current = current_alias_version(client, name, CHAMPION)
    previous = load_bundle(client, f"models:/{name}/{current}").tags if current is not None else {}
    target = previous.get(gate.TAG_PREVIOUS)
    if not target:
        return Promotion(rollback_bundle(client, name))  # raises its RollbackError
    restored = load_bundle(client, f"models:/{name}/{target}").bundle
    from llmops_dagster.search.aliases import current_index

    live = current_index(es, alias)
    if live is None or _model_of(es, live) == restored.embedding_model_id:
        return Promotion(rollback_bundle(client, name))
    back_to = previous.get(TAG_INDEX_REPLACED) or restored.index_name
    found = _model_of(es, back_to)
    if found != restored.embedding_model_id:
        problem = "is gone" if found is None else f"holds {found}"
        raise RollbackError(
            f"v{target} answers with {restored.embedding_model_id}; its index {back_to} "
            f"{problem}: nothing moved (rebuild an index for that model first)"
        )
    move = IndexMove(alias, live, back_to)
    return Promotion(_moving_both(es, move, lambda: rollback_bundle(client, name)), move)


def protected_indices(client: MlflowClient, name: str = DEFAULT_BUNDLE_MODEL) -> set[str]:
    """Indices a retention rule must keep: named by the champion, by the version it replaced
    (a rollback restores it, with the index it replaced) and by the challenger."""
    found: set[str] = set()
    for alias in (CHAMPION, CHALLENGER):
        version = current_alias_version(client, name, alias)
        if version is None:
            continue
        held = load_bundle(client, f"models:/{name}/{version}")
        found.add(held.bundle.index_name)
        if alias == CHAMPION:
            if replaced := held.tags.get(TAG_INDEX_REPLACED):
                found.add(replaced)
            if previous := held.tags.get(gate.TAG_PREVIOUS):
                found.add(load_bundle(client, f"models:/{name}/{previous}").bundle.index_name)
    return found


def drop_refused_shadow(
    es: Elasticsearch,
    client: MlflowClient,
    alias: str,
    index: str,
    name: str = DEFAULT_BUNDLE_MODEL,
) -> list[str]:
    """Retention after a refused decision: delete the candidate's shadow ``index`` unless the
    alias points at it or a protected bundle names it. Returns what was deleted."""
    from llmops_dagster.search.aliases import SHADOW_OF, alias_indices
    from llmops_dagster.search.mapping import index_meta

    if not es.indices.exists(index=index):
        return []
    if index_meta(es, index).get(SHADOW_OF) != alias or index in alias_indices(es, alias):
        return []
    if index in protected_indices(client, name):
        return []
    es.indices.delete(index=index, ignore_unavailable=True)
    return [index]
