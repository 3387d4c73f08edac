"""A candidate RAG bundle against the champion: resolve both sides, run them, decide, record.

What the ``rag_evaluation`` asset does, free of Dagster, in four steps the asset calls in order:

1. :func:`resolve_sides` — the candidate bundle from the run's :class:`CandidateRequest` and
   what the resources make today (generator pin, registered prompt, embedding model, the index
   behind the alias), and the baseline: the current champion bundle answering with its own pinned
   settings on today's index, or the base model when there is no champion. The champion is read
   once: the decision records which version it was compared with, and promotion later moves
   the alias only if that version still holds it (compare-and-set).
2. :func:`evaluate_candidate` — both sides answer the same golden questions with one judge
   (scores from two judges would not be comparable), the paired comparison and the promotion
   policy decide, and the champion is compared with its own scores at promotion.
3. :func:`record_evaluation` — the candidate's evaluation, the comparison, the decision and
   each side's answers (``evaluate.answer_reuse``: a later evaluation of the same bundle on the
   same inputs scores them instead of answering again) go into the evaluation run, and the
   candidate bundle is registered from it.
4. The asset turns :class:`CandidateEvaluation` into its output and metadata.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_dagster.evaluate.answer_key import AnswerInputs
from llmops_dagster.evaluate.answer_reuse import (
    SIDES,
    AnswerReuse,
    SideAnswers,
    answer_golden,
    record_side_answers,
)
from llmops_dagster.evaluate.bundle_eval import (
    BundleEvaluation,
    compare_and_decide,
    compared_metrics,
    comparison_rows,
    log_comparison,
    score_answers,
)
from llmops_dagster.evaluate.compare import MetricComparison
from llmops_dagster.evaluate.golden import GoldenSet
from llmops_dagster.evaluate.metrics import require_metrics_depth, retrieval_depths
from llmops_dagster.evaluate.policy import Decision, PromotionPolicy
from llmops_dagster.evaluate.tracking import TABLE_ARTIFACT, log_evaluation
from llmops_dagster.evaluate.triggers import champion_regression, read_table_artifact
from llmops_dagster.models.spec import GeneratorPin, JudgeSpec
from llmops_dagster.rag.bundle import (
    DEFAULT_BUNDLE_MODEL,
    TAG_BASELINE_VERSION,
    TAG_GENERATOR_LOCATION,
    BundleVersion,
    RagBundle,
    current_champion,
    register_bundle,
)
from llmops_dagster.rag.extractive import ExtractiveAnswerer
from llmops_dagster.search.queries import SearchMode

if TYPE_CHECKING:
    from deepeval.metrics import BaseMetric
    from mlflow import MlflowClient

    from llmops_dagster.rag.pipeline import RagPipeline
    from llmops_dagster.tracking.runs import RunHandle


class CandidateError(ValueError):
    """The candidate cannot be evaluated as asked (the message names the setting or what to
    materialize first); nothing was answered or recorded."""


@dataclass(frozen=True)
class CandidateRequest:
    """What a run asks to evaluate: the candidate's generator and retrieval settings.

    ``model_version``: the adapter version of an ``llm`` candidate; ``"base"`` = the base
    model; ``None`` = the newest registered version. Ignored for ``extractive``.
    """

    generator: str
    model_version: str | None
    mode: str
    k: int
    metrics_depth: int
    max_new_tokens: int

    def __post_init__(self) -> None:
        if self.generator not in ("llm", "extractive"):
            raise CandidateError(f"generator must be 'llm' or 'extractive', got {self.generator!r}")
        modes = [mode.value for mode in SearchMode]
        if self.mode not in modes:
            raise CandidateError(f"mode must be one of {modes}, got {self.mode!r}")
        for name in ("k", "metrics_depth", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise CandidateError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CandidateRequest:
        """The request's fields out of a flat run config (other keys are ignored)."""
        return cls(
            generator=str(config["generator"]),
            model_version=config.get("model_version"),
            mode=str(config["mode"]),
            k=int(config["k"]),
            metrics_depth=int(config["metrics_depth"]),
            max_new_tokens=int(config["max_new_tokens"]),
        )


@dataclass(frozen=True)
class Sides:
    """The two bundles that answer: the candidate, and the champion (or the base model)."""

    candidate: RagBundle
    baseline: RagBundle
    baseline_label: str
    #: The champion as read once for this evaluation (None: there was none).
    champion: BundleVersion | None

    @property
    def baseline_version(self) -> str | None:
        """The champion version compared with (None: the base model)."""
        return self.champion.version if self.champion is not None else None

    @property
    def baseline_tags(self) -> dict[str, str]:
        """The champion version's tags (where its generator was loaded from), else none."""
        return dict(self.champion.tags) if self.champion is not None else {}

    @property
    def model_uri(self) -> str:
        """The candidate's generator: its adapter version, else its pinned generator."""
        return self.candidate.adapter_uri or self.candidate.generator_pin.describe()


def resolve_adapter_uri(
    client: MlflowClient, adapter_model_name: str, model_version: str | None
) -> str | None:
    """``models:/<name>/<version>`` of the adapter an ``llm`` candidate uses: ``model_version``,
    or the newest registered version when None; None for ``"base"`` (the base model)."""
    from mlflow.exceptions import MlflowException

    if model_version == "base":
        return None
    if model_version is None:
        versions = client.search_model_versions(f"name = '{adapter_model_name}'")
        if not versions:
            raise CandidateError(
                f"no registered version of {adapter_model_name}: materialize lora_adapter first "
                "(or evaluate model_version: base)"
            )
        model_version = str(max(int(v.version) for v in versions))
    try:
        found = client.get_model_version(adapter_model_name, model_version)
    except MlflowException as exc:
        raise CandidateError(
            f"model_version {model_version!r}: no such version of {adapter_model_name} "
            f"({exc.message})"
        ) from exc
    return f"models:/{adapter_model_name}/{found.version}"


def resolve_sides(
    client: MlflowClient,
    request: CandidateRequest,
    *,
    llm_pin: GeneratorPin,
    prompt_uri: str,
    prompt_version: str,
    embedding_model_id: str,
    index_name: str | None,
    index_alias: str,
    adapter_model_name: str,
    bundle_model: str = DEFAULT_BUNDLE_MODEL,
    candidate_index: CandidateIndex | None = None,
) -> Sides:
    """The candidate bundle ``request`` describes, and the baseline it is compared with.

    ``llm_pin``: the generator as the settings make it today, pinned by value (backend, model,
    weights digest, decoding): a changed setting is a new bundle key, evaluated before it
    serves. The base bundle (no champion yet) is the base model with the request's retrieval
    settings; a champion answers with its own pinned settings on today's index.

    ``candidate_index`` (an index candidate: a shadow index of a new embedding model): the
    candidate is the champion's bundle with that index and its model, the baseline the
    champion on the live index — only retrieval differs. With no champion yet both sides are
    the bundle ``request`` describes (not the base model: a generator change would hide the
    index's effect), on the shadow and on the live index.
    """
    if index_name is None:
        raise CandidateError(f"alias {index_alias} has no index: materialize search_index")
    champion = current_champion(client, bundle_model)
    if candidate_index is not None and champion is not None:
        # The champion's own bundle on both indices: the request's generator plays no part.
        on_live = replace(champion.bundle, index_name=index_name)
        on_shadow = replace(
            champion.bundle,
            index_name=candidate_index.name,
            embedding_model_id=candidate_index.model_id,
        )
        return Sides(on_shadow, on_live, f"champion {champion.uri}", champion)
    adapter_uri = None
    if request.generator == "llm":
        adapter_uri = resolve_adapter_uri(client, adapter_model_name, request.model_version)
    base = RagBundle(
        **RagBundle.generator_fields(llm_pin),
        adapter_uri=None,
        prompt_uri=prompt_uri,
        prompt_version=prompt_version,
        retrieval_mode=request.mode,
        retrieval_k=request.k,
        metrics_depth=request.metrics_depth,
        max_new_tokens=request.max_new_tokens,
        embedding_model_id=embedding_model_id,
        index_name=index_name,
        index_alias=index_alias,
    )
    pin = llm_pin
    if request.generator == "extractive":
        pin = GeneratorPin("builtin", ExtractiveAnswerer().model_id)
    candidate = replace(base, **RagBundle.generator_fields(pin), adapter_uri=adapter_uri)
    if candidate_index is not None:  # and no champion yet: the requested bundle on both
        on_shadow = replace(
            candidate, index_name=candidate_index.name, embedding_model_id=candidate_index.model_id
        )
        label = f"the same bundle on the live index {index_name} (no champion yet)"
        return Sides(on_shadow, candidate, label, None)
    if champion is None:
        return Sides(candidate, base, "base model (no champion yet)", None)
    baseline = replace(champion.bundle, index_name=index_name)
    return Sides(candidate, baseline, f"champion {champion.uri}", champion)


@dataclass(frozen=True)
class CandidateIndex:
    """A physical index (of another embedding model) the candidate answers on."""

    name: str
    model_id: str


#: ``index`` values of a run: the live index (no index candidate), the newest shadow.
LIVE_INDEX, NEWEST_SHADOW = "live", "shadow"


def resolve_candidate_index(es_client: Any, alias: str, index: str) -> CandidateIndex | None:
    """The run config's ``index``: ``live`` (None: the candidate answers on the live index),
    ``shadow`` (the newest shadow index of ``alias``) or a physical index name of ``alias``.
    A shadow whose chunks are not the live index's (a reindex ran since and could not sync it)
    is refused: the comparison would be on stale data."""
    from llmops_dagster.search.aliases import current_index, list_versions, shadow_indices
    from llmops_dagster.search.mapping import index_meta

    live = current_index(es_client, alias)
    if index == LIVE_INDEX or (live is not None and index == live):
        return None
    if index == NEWEST_SHADOW:
        shadows = shadow_indices(es_client, alias)
        if not shadows:
            raise CandidateError(
                f"index: shadow, but alias {alias} has no shadow index: materialize shadow_index "
                "(the finetune_embedding job)"
            )
        index = shadows[-1]
    elif index not in list_versions(es_client, alias):
        raise CandidateError(
            f"index {index!r}: not 'live', 'shadow' nor a physical index of alias {alias} "
            f"({', '.join(list_versions(es_client, alias)) or 'none'})"
        )
    meta = index_meta(es_client, index)
    model_id = str(meta.get("model_id") or "")
    if not model_id:
        raise CandidateError(f"index {index} records no _meta.model_id")
    if live is not None:
        live_digest = index_meta(es_client, live).get("chunk_set_digest")
        if meta.get("chunk_set_digest") != live_digest:
            raise CandidateError(
                f"index {index} holds another chunk set than the live index {live}: materialize "
                "search_index (it syncs shadow indices) before evaluating it"
            )
    return CandidateIndex(index, model_id)


def judge_spec_for_run(
    configured: JudgeSpec, *, kind: str | None = None, capable: bool | None = None
) -> JudgeSpec:
    """The models resource's judge with the run's overrides (``None``: keep the configured
    kind / capability). The endpoint stays the configured one: ``kind: openai`` on a run uses
    the judge endpoint of the settings."""
    spec = configured
    if kind is not None:
        if kind not in ("none", "local", "openai"):
            raise CandidateError(f"judge must be none, local or openai, got {kind!r}")
        spec = replace(spec, kind=kind)  # type: ignore[arg-type]
    if capable is not None:
        spec = replace(spec, capable=capable)
    return spec


@dataclass(frozen=True)
class ChampionRegression:
    """The champion answering today vs its per-case scores recorded when it was promoted."""

    regressed: bool
    reasons: tuple[str, ...]
    comparison: list[dict[str, Any]]
    recorded_run_id: str

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons) or "holds up (no significant regression)"

    def to_dict(self) -> dict[str, Any]:
        """The shape the ``champion_holds_up`` check reads from the asset's output."""
        return {
            "regressed": self.regressed,
            "reasons": list(self.reasons),
            "comparison": self.comparison,
            "recorded_run_id": self.recorded_run_id,
            "summary": self.summary,
        }


def recorded_cases(client: MlflowClient, run_id: str) -> list[dict[str, Any]]:
    """The per-case table an evaluation run logged (``evaluation/cases.json``)."""
    with tempfile.TemporaryDirectory(prefix="llmops-cases-") as folder:
        path = client.download_artifacts(run_id, TABLE_ARTIFACT, folder)
        return read_table_artifact(Path(path))


@dataclass
class CandidateEvaluation:
    """Both sides' answers scored, compared and decided (not yet recorded)."""

    sides: Sides
    golden: GoldenSet
    candidate: BundleEvaluation
    baseline: BundleEvaluation
    policy: PromotionPolicy
    comparisons: list[MetricComparison]
    decision: Decision
    regression: ChampionRegression | None
    #: What the answers were keyed on (None: evaluated without answer reuse).
    answer_inputs: AnswerInputs | None = None

    def comparison_rows(self) -> list[dict[str, Any]]:
        return comparison_rows(self.comparisons)

    def side_answers(self) -> dict[str, SideAnswers]:
        """``candidate`` / ``baseline`` → its answers and where they came from."""
        found = {}
        for side, evaluated in zip(SIDES, (self.candidate, self.baseline), strict=True):
            if evaluated.answers is not None:
                found[side] = evaluated.answers
        return found

    def aggregates(self) -> dict[str, float]:
        """The candidate's aggregates, rounded to 4 places (what the UI shows)."""
        return {k: round(float(v), 4) for k, v in self.candidate.result.aggregates.items()}


def evaluate_candidate(
    sides: Sides,
    golden: GoldenSet,
    *,
    pipeline_for: Callable[[RagBundle, Mapping[str, str]], RagPipeline],
    metrics: Sequence[BaseMetric],
    policy: PromotionPolicy,
    judge: Any = None,
    judge_capable: bool = False,
    judge_max_cases: int | None = None,
    batch_size: int = 8,
    n_resamples: int = 2000,
    recorded: Callable[[str], list[dict[str, Any]]] | None = None,
    reuse: AnswerReuse | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> CandidateEvaluation:
    """Answer ``golden`` with both sides, compare them pairwise and decide under ``policy``.

    ``pipeline_for(bundle, recorded_tags)``: the one ``RagPipeline`` of a bundle (the
    resources' ``build_bundle_pipeline``); ``recorded_tags`` are the champion version's tags.
    ``recorded(run_id)``: the per-case table of the run that promoted the champion
    (:func:`recorded_cases`); with it the champion today is compared with its scores then.
    ``judge``: one judge for both sides (None: no judge metrics).
    ``reuse``: how a side's answers are keyed and found (``evaluate.answer_reuse``): a side
    whose key has recorded answers — in an earlier run, or the other side's of this one — is
    scored on them instead of answering again (None: both sides always answer).
    """

    def side_answers(
        label: str, bundle: RagBundle, tags: Mapping[str, str], other: SideAnswers | None
    ) -> SideAnswers:
        """Recorded answers of the same key when there are (the other side's of this
        evaluation, or a run's), else generated through the bundle's pipeline."""
        key = reuse.key(bundle) if reuse is not None else None
        if reuse is not None and reuse.enabled and key is not None:
            if other is not None and other.key == key:
                log(f"{label}: same answers as the other side ({len(other.answers)} reused)")
                return other.reused_here()
            found = reuse.find(bundle, golden, log=log)
            if found is not None:
                log(f"{label}: reused {len(found.answers)} answers of run {found.run_id}")
                return SideAnswers(key, found.answers, 0, len(found.answers), found.run_id)
        answers = answer_golden(
            pipeline_for(bundle, tags),
            golden,
            batch_size=batch_size,
            progress=lambda done, total: log(f"{label}: answered {done}/{total}"),
        )
        return SideAnswers(key, tuple(answers), len(answers), 0)

    def run_side(
        label: str, bundle: RagBundle, tags: Mapping[str, str], other: SideAnswers | None = None
    ) -> BundleEvaluation:
        if retrieval_depths(metrics):  # before answering anything
            require_metrics_depth(bundle.metrics_depth, metrics)
        answers = side_answers(label, bundle, tags, other)
        result = score_answers(
            golden,
            answers.answers,
            metrics=metrics,
            judge=judge,
            judge_capable=judge_capable,
            judge_max_cases=judge_max_cases,
        )
        return BundleEvaluation(label, bundle, result, answers)

    log(
        f"candidate {sides.candidate.describe()} vs {sides.baseline_label} on "
        f"{len(golden.items)} golden items ({sides.candidate.index_name})"
    )
    candidate = run_side("candidate", sides.candidate, {})
    baseline = run_side(
        sides.baseline_label, sides.baseline, sides.baseline_tags, candidate.answers
    )
    comparisons, decision = compare_and_decide(
        candidate,
        baseline,
        policy,
        n_resamples=n_resamples,
        baseline_version=sides.baseline_version,
    )
    regression = None
    champion = sides.champion
    if champion is not None and champion.run_id and recorded is not None:
        regressed, against_then, reasons = champion_regression(
            baseline.result.rows,
            recorded(champion.run_id),
            policy,
            metrics=compared_metrics(baseline.result, baseline.result),
            n_resamples=n_resamples,
        )
        regression = ChampionRegression(
            regressed, tuple(reasons), comparison_rows(against_then), champion.run_id
        )
        log(f"champion since promotion: {regression.summary}")
    log(decision.summary())
    return CandidateEvaluation(
        sides,
        golden,
        candidate,
        baseline,
        policy,
        comparisons,
        decision,
        regression,
        reuse.inputs if reuse is not None else None,
    )


def record_evaluation(
    run: RunHandle,
    client: MlflowClient,
    evaluation: CandidateEvaluation,
    *,
    prompt_uri: str,
    generator_location: Mapping[str, str] | None = None,
    bundle_model: str = DEFAULT_BUNDLE_MODEL,
) -> BundleVersion:
    """Into the evaluation ``run``: the candidate's scores (golden set as an input), the paired
    comparison, the policy and the decision; then register the candidate bundle from it.
    ``generator_location``: where an ``llm`` candidate's generator was loaded from (a version
    tag, not part of the bundle's key)."""
    sides, decision = evaluation.sides, evaluation.decision
    candidate = sides.candidate
    log_evaluation(
        run,
        evaluation.candidate.result,
        evaluation.golden,
        gate_config=evaluation.policy.gate_config(),
        gate_result=decision.gate,
        context={"bundle": candidate.describe(), "index": candidate.index_name},
        tags={
            "golden.name": evaluation.golden.name,
            "golden.digest": evaluation.golden.version,
            "model.uri": sides.model_uri,
            "generator.pin": candidate.generator_pin.describe(),
            TAG_BASELINE_VERSION: sides.baseline_version or "",
            "prompt.version": prompt_uri,
            "index.name": candidate.index_name,
            "index.alias": candidate.index_alias,
            **{f"decision.override.{i}": o for i, o in enumerate(decision.overrides)},
        },
    )
    log_comparison(run, evaluation.baseline, evaluation.comparisons, decision, evaluation.policy)
    if evaluation.answer_inputs is not None:
        logged: set[str] = set()
        bundles = {"candidate": candidate, "baseline": sides.baseline}
        for side, answers in evaluation.side_answers().items():
            record_side_answers(
                run, side, bundles[side], answers, evaluation.answer_inputs, logged=logged
            )
    extra = {}
    if candidate.generator == "llm" and generator_location is not None:
        extra = {TAG_GENERATOR_LOCATION: json.dumps(dict(generator_location))}
    return register_bundle(client, candidate, run=run, name=bundle_model, extra_tags=extra)
