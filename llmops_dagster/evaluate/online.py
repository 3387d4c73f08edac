"""Online evaluation: a sample of the answers users actually got, scored like golden cases.

The offline evaluation judges a bundle on golden questions before it serves; this judges what it
then answered. Each day's served answers (the serving store holds their text) are sampled per
bundle version — stratified, so a version that answered little is not drowned by the champion,
and reproducible: an answer's place in the sample is a hash of the day and its trace id, so
re-judging a day judges the same answers — and scored with the metrics that need no reference
answer (production has none):

- ``citation_validity`` (deterministic): the share of the answer's cited chunks that were among
  the chunks it was given; an answer that cites nothing scores 0 (nothing can be checked), a
  refusal is not scored (it is counted as ``refused``).
- the judge's ``answer_relevancy`` and ``faithfulness`` (DeepEval, the judge the offline
  evaluation uses, over the chunks the answer was given), when a judge is configured.

Restricted answers (an audience beyond public, :mod:`llmops_dagster.serving.disclosure`) are
not judged: their scores and reasons would be written to the traces and a warehouse table that
are read beyond their audience. They are counted (``skipped_restricted``).

Dagster-free; :mod:`assets.judgments` reads the store, calls :func:`judge_answers` and writes
the results back (table, MLflow assessments, review candidates).
"""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deepeval.test_case import LLMTestCase

from llmops_dagster.evaluate.metrics import DeterministicMetric
from llmops_dagster.evaluate.run import EvalCase, EvalResult, evaluate_rag
from llmops_dagster.serving.disclosure import audience_from_row, is_restricted

CITATION_VALIDITY = "citation_validity"
CITED_KEY = "cited_chunk_ids"
INFERRED_KEY = "citations_inferred"
GIVEN_KEY = "given_chunk_ids"
#: The judge metrics online (no reference answer in production: no correctness).
ONLINE_JUDGE_METRICS = ("answer_relevancy", "faithfulness")


@dataclass(frozen=True)
class ServedAnswer:
    """One served answer as the judge sees it (from the serving store)."""

    trace_id: str
    day: str
    bundle_version: str  # "base" when no bundle answered
    question: str
    answer: str
    cited_chunk_ids: tuple[str, ...]
    retrieved_chunk_ids: tuple[str, ...]
    refused: bool = False
    #: The model cited nothing itself: the answer path inferred its citations from word overlap.
    citations_inferred: bool = False
    #: Texts of the retrieved chunks found in the warehouse (a chunk since removed is absent).
    context: tuple[str, ...] = ()

    def with_context(self, texts: Mapping[str, str]) -> ServedAnswer:
        found = tuple(texts[c] for c in self.retrieved_chunk_ids if c in texts)
        return ServedAnswer(**{**self.__dict__, "context": found})


@dataclass(frozen=True)
class DaySample:
    """A day's answers chosen for judging, and what was left out and why."""

    day: str
    chosen: list[ServedAnswer]
    answered: int
    skipped_restricted: int
    per_version: dict[str, int] = field(default_factory=dict)

    @property
    def share_judged(self) -> float:
        """Judged ÷ answered that day (restricted ones count as answered, not judged)."""
        return len(self.chosen) / self.answered if self.answered else 0.0


def sample_order(day: str, trace_id: str) -> str:
    """An answer's place in its day's sample (lower = chosen first)."""
    return hashlib.sha256(f"{day}:{trace_id}".encode()).hexdigest()


def served_answer(row: Mapping[str, Any], day: str, *, refused: bool = False) -> ServedAnswer:
    """A serving-store answer row (``ServingStore.answers_since``) as a :class:`ServedAnswer`."""
    retrieved = [c["chunk_id"] if isinstance(c, Mapping) else c[0] for c in row["retrieved"]]
    return ServedAnswer(
        trace_id=str(row["trace_id"]),
        day=day,
        bundle_version=str(row.get("bundle_version") or "base"),
        question=str(row["question"]),
        answer=str(row["answer"]),
        cited_chunk_ids=tuple(str(c) for c in row["cited_chunk_ids"]),
        retrieved_chunk_ids=tuple(str(c) for c in retrieved),
        refused=refused,
        citations_inferred=bool(row.get("citations_inferred", False)),
    )


def sample_day(
    rows: Sequence[Mapping[str, Any]],
    day: str,
    *,
    per_version: int,
    refused: frozenset[str] = frozenset(),
) -> DaySample:
    """Up to ``per_version`` answers of each bundle version among ``rows`` answered on ``day``
    (``created_at`` starts with it), restricted answers left out. ``refused``: trace ids the
    server refused (the guardrails' refusals, from the traces): sampled, never scored."""
    if per_version < 1:
        raise ValueError(f"per_version must be at least 1, got {per_version}")
    of_day = [r for r in rows if str(r["created_at"]).startswith(day)]
    skipped = 0
    by_version: dict[str, list[ServedAnswer]] = defaultdict(list)
    for row in of_day:
        audience = audience_from_row(row.get("audience"), row.get("asker_groups") or [])
        if is_restricted(audience):
            skipped += 1
            continue
        answer = served_answer(row, day, refused=str(row["trace_id"]) in refused)
        by_version[answer.bundle_version].append(answer)
    chosen: list[ServedAnswer] = []
    counts: dict[str, int] = {}
    for version in sorted(by_version):
        ordered = sorted(by_version[version], key=lambda a: sample_order(day, a.trace_id))
        picked = ordered[:per_version]
        counts[version] = len(picked)
        chosen.extend(picked)
    return DaySample(day, chosen, len(of_day), skipped, counts)


class CitationValidity(DeterministicMetric):
    """Share of the cited chunks that were among the chunks the answer was given (0 when the
    answer cites nothing: an uncited answer cannot be checked against its sources). Citations
    the answer path inferred from word overlap (the model cited nothing itself) count as none:
    they are among the chunks given by construction, so they would score a model that ignored
    its context — a prompt that drops the context — as fully valid."""

    needs_reference = False

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__(threshold)
        self.key = CITATION_VALIDITY

    def _compute(self, test_case: LLMTestCase) -> tuple[float, str]:
        meta = dict(test_case.metadata or {})
        cited, given = list(meta[CITED_KEY]), set(meta[GIVEN_KEY])
        if meta.get(INFERRED_KEY):
            return 0.0, "cites no chunk itself (citations inferred from word overlap)"
        if not cited:
            return 0.0, "cites no chunk"
        valid = [c for c in cited if c in given]
        invalid = sorted(set(cited) - given)
        reason = f"{len(valid)}/{len(cited)} citations among the chunks given"
        return len(valid) / len(cited), reason + (f" (not given: {invalid})" if invalid else "")


def as_case(answer: ServedAnswer) -> EvalCase:
    return EvalCase(
        case_id=answer.trace_id,
        question=answer.question,
        actual_output=answer.answer,
        expected_output=None,
        retrieval_context=list(answer.context),
        retrieved_chunk_ids=list(answer.retrieved_chunk_ids),
        metadata={
            CITED_KEY: list(answer.cited_chunk_ids),
            GIVEN_KEY: list(answer.retrieved_chunk_ids),
            INFERRED_KEY: answer.citations_inferred,
        },
    )


def judge_metric_list(judge: Any) -> list[Any]:
    """DeepEval's answer relevancy and faithfulness over ``judge`` (as offline, no reasons)."""
    from deepeval.metrics import AnswerRelevancyMetric, FaithfulnessMetric

    return [
        AnswerRelevancyMetric(threshold=0.5, model=judge, include_reason=False, async_mode=True),
        FaithfulnessMetric(threshold=0.5, model=judge, include_reason=False, async_mode=True),
    ]


@dataclass(frozen=True)
class Judgment:
    """One metric's score of one served answer."""

    trace_id: str
    day: str
    bundle_version: str
    metric: str
    score: float | None
    reason: str | None
    error: str | None
    judge: str  # the judge model's name, or "code" for a deterministic metric

    def to_row(self) -> list[Any]:
        return [self.trace_id, self.day, self.bundle_version, self.metric, self.score,
                self.reason, self.error, self.judge]  # fmt: skip


JUDGMENT_COLUMNS = {
    "trace_id": "VARCHAR",
    "day": "VARCHAR",
    "bundle_version": "VARCHAR",
    "metric": "VARCHAR",
    "score": "DOUBLE PRECISION",
    "reason": "VARCHAR",
    "error": "VARCHAR",
    "judge": "VARCHAR",
}


def judge_answers(
    answers: Sequence[ServedAnswer],
    *,
    judge: Any = None,
    judge_capable: bool = False,
) -> tuple[list[Judgment], EvalResult | None]:
    """Score ``answers``: citation validity on every answered one, the judge's metrics too when
    ``judge`` is given. Refusals get no scores. Returns one :class:`Judgment` per score."""
    scored = [a for a in answers if not a.refused]
    if not scored:
        return [], None
    result = evaluate_rag(
        [as_case(a) for a in scored],
        metrics=[CitationValidity()],
        judge=judge,
        judge_capable=judge_capable,
        judge_metric_list=judge_metric_list(judge) if judge is not None else None,
        # Every sampled answer: the sample is the budget.
        judge_max_cases=len(scored),
        engine="direct",
    )
    by_id = {a.trace_id: a for a in scored}
    judge_name = result.judge or "none"
    out: list[Judgment] = []
    for row in result.rows:
        answer = by_id[str(row["case_id"])]
        for key in [*result.metric_keys, *result.judge_metric_keys]:
            out.append(
                Judgment(
                    trace_id=answer.trace_id,
                    day=answer.day,
                    bundle_version=answer.bundle_version,
                    metric=key,
                    score=None if row.get(key) is None else float(row[key]),
                    reason=row.get(f"{key}_reason"),
                    error=row.get(f"{key}_error"),
                    judge="code" if key in result.metric_keys else judge_name,
                )
            )
    return out, result


def version_means(judgments: Sequence[Judgment]) -> dict[str, dict[str, float]]:
    """bundle version → metric → mean score (errors scored 0, as offline)."""
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for j in judgments:
        if j.error:
            scores[j.bundle_version][j.metric].append(0.0)
        elif j.score is not None:
            scores[j.bundle_version][j.metric].append(j.score)
    return {
        version: {metric: statistics.fmean(values) for metric, values in metrics.items()}
        for version, metrics in scores.items()
    }


def low_scores(judgments: Sequence[Judgment], threshold: float) -> dict[str, list[str]]:
    """trace id → why it scored low: every metric below ``threshold`` (or errored)."""
    out: dict[str, list[str]] = defaultdict(list)
    for j in judgments:
        if j.error:
            out[j.trace_id].append(f"{j.metric} errored ({j.error})")
        elif j.score is not None and j.score < threshold:
            detail = f": {j.reason}" if j.reason else ""
            out[j.trace_id].append(f"{j.metric} {j.score:.2f} < {threshold:g}{detail}")
    return dict(out)


@dataclass(frozen=True)
class OnlineWarning:
    bundle_version: str
    metric: str
    online: float
    reference: float
    reference_source: str
    margin: float

    def describe(self) -> str:
        return (
            f"bundle {self.bundle_version}: online {self.metric} {self.online:.3f} is more "
            f"than {self.margin:g} below {self.reference:.3f} ({self.reference_source})"
        )


def online_warnings(
    means: Mapping[str, Mapping[str, float]],
    *,
    offline: Mapping[str, float],
    floors: Mapping[str, float],
    margin: float,
) -> list[OnlineWarning]:
    """Per bundle version and metric: online mean below the reference minus ``margin``. The
    reference is the champion's offline score of the metric when its evaluation logged one,
    else the metric's floor (``citation_validity`` has no offline counterpart: golden answers
    are scored against references, not citations)."""
    warnings: list[OnlineWarning] = []
    for version in sorted(means):
        for metric, online in sorted(means[version].items()):
            if metric in offline:
                reference, source = offline[metric], "the champion's offline evaluation"
            elif metric in floors:
                reference, source = floors[metric], "the configured floor"
            else:
                continue
            if online < reference - margin:
                warnings.append(OnlineWarning(version, metric, online, reference, source, margin))
    return warnings
