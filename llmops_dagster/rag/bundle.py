"""RAG bundles in the MLflow registry: register, load, and move ``champion``/``challenger``.

Bundles (:class:`~llmops_dagster.rag.bundle_spec.RagBundle`, what a bundle pins) are versions
of one registered model (``llmops-rag-bundle``) whose ``bundle.*`` tags hold the bundle
(``bundle/bundle.json`` in the registering run is the source).

Aliases move with the audit trail of :mod:`llmops_dagster.evaluate.gate` (tags first, then the
alias). Moving ``champion`` is compare-and-set: the caller names the champion the decision was
compared with, and the move is refused (:class:`StaleDecisionError`) when another version holds
the alias by then — a decision against yesterday's champion never installs a bundle.

``RagBundle``, ``BundleError`` and ``TAG_PREFIX`` are importable from here too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmops_dagster.evaluate import gate
from llmops_dagster.evaluate.gate import RollbackError, current_alias_version
from llmops_dagster.rag.bundle_spec import TAG_PREFIX, BundleError, RagBundle
from llmops_dagster.rag.prompt_registry import PromptRegistryError, require_prompt_hash

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from llmops_dagster.tracking.runs import RunHandle

__all__ = [
    "BUNDLE_DIR",
    "BUNDLE_FILE",
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_BUNDLE_MODEL",
    "KIND_BUNDLE",
    "TAG_ADAPTER_BASE",
    "TAG_BASELINE_VERSION",
    "TAG_BUNDLE_KEY",
    "TAG_BUNDLE_VERSION",
    "TAG_DECISION",
    "TAG_GENERATOR_LOCATION",
    "TAG_KIND",
    "TAG_OUTCOME",
    "TAG_PREFIX",
    "AliasMove",
    "BundleError",
    "BundleVersion",
    "RagBundle",
    "RollbackError",
    "StaleDecisionError",
    "approve_bundle",
    "check_bundle",
    "current_champion",
    "load_bundle",
    "promote_decided",
    "register_bundle",
    "rollback_bundle",
    "set_bundle_alias",
]

DEFAULT_BUNDLE_MODEL = "llmops-rag-bundle"
CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_KIND = "llmops.kind"  # same key as models.registry.TAG_KIND
KIND_BUNDLE = "rag_bundle"
TAG_BUNDLE_KEY = "llmops.bundle_key"
TAG_BUNDLE_VERSION = "llmops.bundle_version"  # on the registering run
TAG_DECISION = "decision"
#: The outcome of the evaluation that registered a version (``champion``, ``challenger``,
#: ``awaiting_approval``, ``awaiting_online`` — then ``refused_online`` or ``champion`` once the
#: online evidence settled it (``evaluate/online_gate.py``) —, ``refused``, or ``stale`` when the
#: champion moved before promotion).
TAG_OUTCOME = "decision.outcome"
#: The champion version the decision was compared with ("" = the base model, no champion).
TAG_BASELINE_VERSION = "decision.baseline_version"
#: Where the version's generator was loaded from when it was evaluated (not part of the key:
#: a machine's path). Lets a champion keep answering after the generator settings move on.
TAG_GENERATOR_LOCATION = "llmops.generator_location"
TAG_ADAPTER_BASE = "llmops.base_model_id"  # models.registry.TAG_BASE_MODEL_ID, on adapters
BUNDLE_DIR = "bundle"  # the version's source: <run artifacts>/bundle/bundle.json
BUNDLE_FILE = f"{BUNDLE_DIR}/bundle.json"
_MAX_TAG_CHARS = 5000  # model-version tag values: MLflow servers before 3.x cap them at 5000
_BUNDLE_REF_RE = re.compile(r"models:/([^/@\s]+)(?:/(\d+)|@([\w\-]+))")


class StaleDecisionError(BundleError):
    """The champion moved after the decision was made: the candidate was never compared with
    the bundle it would replace. Nothing moved; re-evaluate against today's champion."""


@dataclass(frozen=True)
class BundleVersion:
    name: str
    version: str
    bundle: RagBundle
    run_id: str | None
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class AliasMove:
    """``previous_version`` None = the alias did not exist; equal versions = nothing moved."""

    previous_version: str | None
    new_version: str
    alias: str

    @property
    def moved(self) -> bool:
        return self.previous_version != self.new_version


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_bundle(client: MlflowClient, bundle: RagBundle) -> None:
    """The prompt version has the bundle's hash; the adapter exists, trained on the same base."""
    from mlflow.exceptions import MlflowException

    trained_on = None
    try:
        require_prompt_hash(client, bundle.prompt_uri, bundle.prompt_version)
        if bundle.adapter_uri is not None:
            name, version = bundle.adapter_uri.removeprefix("models:/").rsplit("/", 1)
            adapter_tags = client.get_model_version(name, version).tags or {}
            trained_on = adapter_tags.get(TAG_ADAPTER_BASE)
    except (PromptRegistryError, MlflowException) as exc:
        raise BundleError(f"{client.tracking_uri}: {getattr(exc, 'message', exc)}") from exc
    if trained_on and trained_on != bundle.base_model_id:
        raise BundleError(f"{bundle.adapter_uri} was trained on {trained_on}, not the bundle's "
                          f"base model {bundle.base_model_id}")  # fmt: skip


def register_bundle(
    client: MlflowClient,
    bundle: RagBundle,
    *,
    run: RunHandle,
    name: str = DEFAULT_BUNDLE_MODEL,
    verify: bool = True,
    extra_tags: Mapping[str, str] | None = None,
) -> BundleVersion:
    """Log ``bundle/bundle.json`` into ``run`` (one bundle per run) and add a version of ``name``
    (created if missing) with the bundle as tags. ``verify``: :func:`check_bundle` first.
    ``extra_tags``: more version tags that are not part of the bundle's key (e.g.
    :data:`TAG_GENERATOR_LOCATION`)."""
    from mlflow.exceptions import MlflowException

    if verify:
        check_bundle(client, bundle)
    logged = run.client.get_run(run.run_id).data.tags.get(TAG_BUNDLE_KEY, bundle.key())
    if logged != bundle.key():  # one bundle.json per run: a version's source must not change
        raise BundleError(f"run {run.run_id} already registered bundle {logged}: use a new run")
    run.set_tag(TAG_BUNDLE_KEY, bundle.key())
    run.log_json(bundle.to_dict(), BUNDLE_FILE)
    try:
        client.create_registered_model(name, description="RAG bundles (llmops-dagster)")
    except MlflowException as exc:  # created before (or concurrently by another run)
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = (
        {**(extra_tags or {})}
        | bundle.as_tags()
        | {
            TAG_KIND: KIND_BUNDLE,
            TAG_BUNDLE_KEY: bundle.key(),
        }
    )
    source, description = f"{run.artifact_uri}/{BUNDLE_DIR}", bundle.describe()[:_MAX_TAG_CHARS]
    mv = client.create_model_version(
        name, source=source, run_id=run.run_id, tags=tags, description=description
    )
    run.set_tag(TAG_BUNDLE_VERSION, f"{name}/{mv.version}")
    return BundleVersion(name, str(mv.version), bundle, run.run_id, tags)


def load_bundle(client: MlflowClient, ref: str) -> BundleVersion:
    """``models:/<name>/<version>`` or ``models:/<name>@<alias>`` → the validated bundle."""
    from mlflow.exceptions import MlflowException

    match = _BUNDLE_REF_RE.fullmatch(ref.strip())
    if not match:
        raise BundleError(f"bundle ref {ref!r} is not models:/<name>/<version> or @<alias>")
    name, version, alias = match.groups()
    get = client.get_model_version_by_alias if alias is not None else client.get_model_version
    try:
        mv = get(name, alias or version)
    except MlflowException as exc:
        raise BundleError(
            f"no bundle {ref} in MLflow {client.tracking_uri}: {exc.message}"
        ) from exc
    tags = dict(mv.tags or {})
    if tags.get(TAG_KIND) != KIND_BUNDLE:
        raise BundleError(f"{ref} (v{mv.version}) is not a RAG bundle ({TAG_KIND} missing)")
    bundle = RagBundle.from_tags(tags)
    if tags.get(TAG_BUNDLE_KEY) != bundle.key():
        raise BundleError(f"{ref} (v{mv.version}): bundle tags were edited after registering")
    return BundleVersion(name, str(mv.version), bundle, mv.run_id, tags)


def current_champion(
    client: MlflowClient, name: str = DEFAULT_BUNDLE_MODEL
) -> BundleVersion | None:
    return current_alias_bundle(client, name, CHAMPION)


def current_alias_bundle(
    client: MlflowClient, name: str = DEFAULT_BUNDLE_MODEL, alias: str = CHAMPION
) -> BundleVersion | None:
    """The bundle ``alias`` points at (None: the alias is not set)."""
    version = current_alias_version(client, name, alias)
    return None if version is None else load_bundle(client, f"models:/{name}/{version}")


#: ``expected_champion`` not given: only allowed for aliases other than ``champion``.
_UNCHECKED: Any = object()


def set_bundle_alias(
    client: MlflowClient,
    name: str,
    version: str | int,
    alias: str,
    *,
    evaluation_run_id: str,
    decision_summary: str,
    expected_champion: str | None = _UNCHECKED,
) -> AliasMove:
    """Point ``alias`` at ``version`` (a registered bundle), audit tags first. ``champion``
    records the replaced version for :func:`rollback_bundle`; other aliases record
    ``<alias>_set_at`` and ``<alias>_evaluation_run_id``. Already there → nothing changes.

    Moving ``champion`` is compare-and-set: ``expected_champion`` is the version the decision
    was compared with (None = no champion then, the base model). When the alias holds another
    version now, nothing moves and :class:`StaleDecisionError` says which and what to do.
    Who may move the alias at the same time is kept to one by the ``evaluation`` Dagster pool
    (``champion_model``); the check covers everything else (a stored decision re-materialised,
    ``bundle approve`` days later, a run outside the pool).
    """
    version = load_bundle(client, f"models:/{name}/{version}").version  # must be a bundle
    if alias == CHAMPION and expected_champion is _UNCHECKED:
        raise BundleError(
            "moving @champion needs expected_champion: the version the decision compared with"
        )
    previous = current_alias_version(client, name, alias)
    if previous == version:
        return AliasMove(previous, version, alias)
    if alias == CHAMPION and previous != expected_champion:
        raise StaleDecisionError(
            f"{name} v{version} was compared with "
            f"{_version_label(expected_champion)}, but @{CHAMPION} is now "
            f"{_version_label(previous)}: nothing moved. Re-evaluate v{version} against "
            "today's champion (the evaluate_candidate job) before promoting it."
        )
    stamp, tag = _now(), functools.partial(client.set_model_version_tag, name)
    if alias == CHAMPION:
        tag(version, gate.TAG_PREVIOUS, previous or "")
        tag(version, gate.TAG_PROMOTED_AT, stamp)
        tag(version, gate.TAG_EVAL_RUN, evaluation_run_id)
        tag(version, TAG_DECISION, decision_summary[:_MAX_TAG_CHARS])
        if previous is not None:
            tag(previous, gate.TAG_REPLACED_BY, version)
            tag(previous, gate.TAG_REPLACED_AT, stamp)
    else:
        tag(version, f"{alias}_set_at", stamp)
        tag(version, f"{alias}_evaluation_run_id", evaluation_run_id)
    client.set_registered_model_alias(name, alias, version)
    return AliasMove(previous, version, alias)


def _version_label(version: str | None) -> str:
    return f"v{version}" if version else "the base model (no champion)"


def promote_decided(
    client: MlflowClient,
    name: str,
    version: str | int,
    *,
    outcome: str,
    baseline_version: str | None,
    evaluation_run_id: str,
    decision_summary: str,
    decision_tags: Mapping[str, str] | None = None,
) -> AliasMove:
    """Apply an evaluation's decision to the registry: record the outcome and the baseline it
    was compared with on the version, then move ``champion`` (compare-and-set against
    ``baseline_version``) or ``challenger``. A stale decision is tagged ``stale`` and raises
    :class:`StaleDecisionError`; the aliases stay as they were. ``decision_tags``: more of the
    decision to record on the version first (the online requirement of ``awaiting_online``)."""
    version = str(version)
    for key, value in (decision_tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_model_version_tag(name, version, TAG_BASELINE_VERSION, baseline_version or "")
    client.set_model_version_tag(name, version, TAG_OUTCOME, outcome)
    alias = CHAMPION if outcome == "champion" else CHALLENGER
    try:
        return set_bundle_alias(
            client,
            name,
            version,
            alias,
            evaluation_run_id=evaluation_run_id,
            decision_summary=decision_summary,
            expected_champion=baseline_version,
        )
    except StaleDecisionError:
        client.set_model_version_tag(name, version, TAG_OUTCOME, "stale")
        raise


def approve_bundle(
    client: MlflowClient, name: str, version: str | int, *, approver: str
) -> AliasMove:
    """A person promotes a version whose decision awaits approval — only while the champion it
    was compared with is still the champion (else :class:`StaleDecisionError`)."""
    found = load_bundle(client, f"models:/{name}/{version}")
    outcome = found.tags.get(TAG_OUTCOME)
    if outcome != "awaiting_approval":
        raise BundleError(
            f"{found.uri} was decided {outcome!r}: only a candidate awaiting approval can be "
            "approved"
        )
    if TAG_BASELINE_VERSION not in found.tags:
        raise StaleDecisionError(
            f"{found.uri} records no {TAG_BASELINE_VERSION}: it cannot be checked against "
            "today's champion; re-evaluate it"
        )
    baseline = found.tags[TAG_BASELINE_VERSION] or None
    current = current_alias_version(client, name, CHAMPION)
    if current != baseline:
        raise StaleDecisionError(
            f"{found.uri} was compared with {_version_label(baseline)}, but @{CHAMPION} is now "
            f"{_version_label(current)}: re-evaluate it against today's champion before "
            "approving"
        )
    stamp = _now()
    client.set_model_version_tag(name, found.version, "approved_by", approver)
    client.set_model_version_tag(name, found.version, "approved_at", stamp)
    return set_bundle_alias(
        client,
        name,
        found.version,
        CHAMPION,
        evaluation_run_id=found.run_id or "",
        decision_summary=f"approved by {approver}",
        expected_champion=baseline,
    )


def rollback_bundle(client: MlflowClient, name: str = DEFAULT_BUNDLE_MODEL) -> AliasMove:
    """Point ``champion`` back at the current champion's ``previous_champion``; the restored
    version is tagged ``champion_rolled_back_from``. :class:`RollbackError` when there is none."""
    current = current_alias_version(client, name, CHAMPION)
    if current is None:
        raise RollbackError(f"{name} has no @{CHAMPION} to roll back")
    target = load_bundle(client, f"models:/{name}/{current}").tags.get(gate.TAG_PREVIOUS)
    if not target:
        raise RollbackError(f"{name} v{current} (@{CHAMPION}) records no {gate.TAG_PREVIOUS}")
    target = load_bundle(client, f"models:/{name}/{target}").version  # must still be a bundle
    stamp, tag = _now(), functools.partial(client.set_model_version_tag, name)
    tag(target, gate.TAG_ROLLED_BACK_FROM, current)
    tag(target, gate.TAG_PROMOTED_AT, stamp)
    tag(current, gate.TAG_REPLACED_BY, target)
    tag(current, gate.TAG_REPLACED_AT, stamp)
    client.set_registered_model_alias(name, CHAMPION, target)
    return AliasMove(current, target, CHAMPION)
