"""Online non-inferiority: a challenger that won offline becomes champion only after real answers.

The promotion policy may require it (``PromotionPolicy.min_online_answers`` > 0): a candidate
the offline comparison would promote becomes ``challenger`` with outcome ``awaiting_online``
instead, and the requirement (N and the margins) is recorded on its registry version
(:meth:`OnlineRequirement.as_tags`), because the step that settles it — ``serving_metrics``,
which compares the arms on what users got (:mod:`llmops_dagster.serving.arm_comparison`) —
does not see the evaluation's run config.

:func:`online_verdict` reads the comparison: fewer than N answers on either arm (on the days both
answered) → ``waiting``; otherwise every margin metric compared on both arms must be
non-inferior: for a metric where higher is better the interval's low end of challenger −
champion must be ≥ −margin, where lower is better its high end ≤ +margin. All met → ``ok``; one
missed → ``refused``. A margin metric with no values on an arm (no rated answers yet) is noted
and not checked, like an offline guard that was not compared. :func:`settle_online` applies
it: ``ok`` promotes compare-and-set against the champion the offline decision was compared
with (a moved champion → ``stale``, nothing moves), ``refused`` tags ``refused_online`` and
removes the challenger alias, ``waiting`` changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from llmops_dagster.serving.arm_comparison import ArmComparison

#: What the online comparison computes (``serving.arm_comparison.ARM_METRICS``): the metrics a
#: margin may name. Kept here too so the policy validates without importing the serving code.
ONLINE_METRICS: tuple[str, ...] = ("latency_ms", "tokens", "cited", "thumbs_down")
#: Every served answer has a value of this metric: its count per arm is the number of answers.
ANSWERS_METRIC = "cited"
#: Quality only (latency and tokens are not quality; the offline cost rule covers tokens):
#: the share of answers citing a chunk may drop by at most 5 points, the thumbs-down share of
#: rated answers rise by at most 10 — wider, because ratings are sparser than answers and
#: their interval is wider at the same N.
DEFAULT_ONLINE_MARGINS: dict[str, float] = {"cited": 0.05, "thumbs_down": 0.10}

AWAITING_ONLINE = "awaiting_online"
REFUSED_ONLINE = "refused_online"
TAG_ONLINE_MIN_ANSWERS = "decision.online.min_answers"
TAG_ONLINE_MARGINS = "decision.online.margins"
#: The latest online verdict on the version (status, n of N, why).
TAG_ONLINE_VERDICT = "decision.online.verdict"

Status = Literal["ok", "refused", "waiting"]


@dataclass(frozen=True)
class OnlineRequirement:
    """At least ``min_answers`` answers per arm, and each ``margins`` metric non-inferior."""

    min_answers: int
    margins: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_ONLINE_MARGINS))

    def __post_init__(self) -> None:
        validate_online(self.min_answers, self.margins)

    def describe(self) -> str:
        margins = ", ".join(f"{k} {v:g}" for k, v in sorted(self.margins.items())) or "none"
        return f"≥ {self.min_answers} answers per arm, margins: {margins}"

    def as_tags(self) -> dict[str, str]:
        return {
            TAG_ONLINE_MIN_ANSWERS: str(self.min_answers),
            TAG_ONLINE_MARGINS: json.dumps(dict(sorted(self.margins.items()))),
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> OnlineRequirement | None:
        """The requirement recorded on a version (None: none recorded)."""
        if TAG_ONLINE_MIN_ANSWERS not in tags:
            return None
        margins = json.loads(tags.get(TAG_ONLINE_MARGINS) or "{}")
        return cls(int(tags[TAG_ONLINE_MIN_ANSWERS]), {k: float(v) for k, v in margins.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"min_answers": self.min_answers, "margins": dict(sorted(self.margins.items()))}


def validate_online(min_answers: int, margins: Mapping[str, float]) -> None:
    """The policy's online fields: named in errors as the run config names them."""
    if min_answers < 0:
        raise ValueError(f"min_online_answers must be >= 0 (0: off), got {min_answers}")
    unknown = sorted(set(margins) - set(ONLINE_METRICS))
    if unknown:
        raise ValueError(
            f"online_margins names {unknown}: the online comparison computes {list(ONLINE_METRICS)}"
        )
    if any(v < 0 for v in margins.values()):
        raise ValueError("online_margins are allowed regressions and must be >= 0")


@dataclass(frozen=True)
class Verdict:
    """``n_answers``: the smaller arm's answers on the compared days; ``n_required``: N."""

    status: Status
    reason: str
    n_answers: int
    n_required: int
    challenger_answers: int = 0
    champion_answers: int = 0


def _margin_check(row: ArmComparison, margin: float) -> tuple[bool | None, str]:
    """(met?, text); None: the metric was not compared on both arms (not checked)."""
    if row.diff is None or row.ci_low is None or row.ci_high is None:
        return None, (
            f"{row.metric} not compared (challenger n={row.challenger_n}, champion "
            f"n={row.champion_n}): not checked"
        )
    interval = f"diff {row.diff:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
    if row.higher_is_better:
        met = row.ci_low >= -margin
        bound = f"low end {row.ci_low:+.4f} {'≥' if met else '<'} -{margin:g}"
    else:
        met = row.ci_high <= margin
        bound = f"high end {row.ci_high:+.4f} {'≤' if met else '>'} +{margin:g}"
    n = f"n={row.challenger_n}/{row.champion_n}"
    return met, f"{row.metric} {interval} {n}: {bound}"


def online_verdict(rows: Sequence[ArmComparison], requirement: OnlineRequirement) -> Verdict:
    """Challenger vs champion online (``compare_arms`` rows) under ``requirement``."""
    by_metric = {row.metric: row for row in rows}
    answers = by_metric.get(ANSWERS_METRIC)
    challenger_n = answers.challenger_n if answers is not None else 0
    champion_n = answers.champion_n if answers is not None else 0
    n, need = min(challenger_n, champion_n), requirement.min_answers

    def verdict(status: Status, reason: str) -> Verdict:
        return Verdict(status, reason, n, need, challenger_n, champion_n)

    if n < need:
        return verdict(
            "waiting",
            f"waiting for online evidence: challenger {challenger_n}, champion {champion_n} "
            f"answers on the days both answered; {need} per arm needed",
        )
    met, missed = [], []
    for metric, margin in sorted(requirement.margins.items()):
        row = by_metric.get(metric)
        if row is None:
            met.append(f"{metric} not compared: not checked")
            continue
        ok, text = _margin_check(row, margin)
        (missed if ok is False else met).append(text)
    counted = f"{challenger_n} challenger / {champion_n} champion answers (≥ {need})"
    if missed:
        return verdict("refused", f"online inferior on {counted}: " + "; ".join(missed + met))
    return verdict("ok", f"online non-inferior on {counted}: " + "; ".join(met or ["no margins"]))


@dataclass(frozen=True)
class OnlineSettlement:
    """What :func:`settle_online` did: ``action`` promoted | refused | waiting | stale."""

    version: str
    verdict: Verdict
    action: str
    detail: str = ""


def settle_online(
    client: MlflowClient,
    name: str,
    challenger: str,
    rows: Sequence[ArmComparison],
) -> OnlineSettlement | None:
    """Apply the online verdict to ``challenger`` when it awaits online evidence (its outcome
    tag is ``awaiting_online``); None otherwise (nothing to settle)."""
    from llmops_dagster.evaluate.gate import current_alias_version
    from llmops_dagster.rag.bundle import (
        CHALLENGER,
        TAG_BASELINE_VERSION,
        TAG_OUTCOME,
        StaleDecisionError,
        load_bundle,
        set_bundle_alias,
    )

    found = load_bundle(client, f"models:/{name}/{challenger}")
    requirement = OnlineRequirement.from_tags(found.tags)
    if found.tags.get(TAG_OUTCOME) != AWAITING_ONLINE or requirement is None:
        return None
    verdict = online_verdict(rows, requirement)
    status = f"{verdict.status} ({verdict.n_answers} of {verdict.n_required}): {verdict.reason}"
    client.set_model_version_tag(name, found.version, TAG_ONLINE_VERDICT, status[:5000])
    if verdict.status == "waiting":
        return OnlineSettlement(found.version, verdict, "waiting")
    if verdict.status == "refused":
        client.set_model_version_tag(name, found.version, TAG_OUTCOME, REFUSED_ONLINE)
        if current_alias_version(client, name, CHALLENGER) == found.version:
            client.delete_registered_model_alias(name, CHALLENGER)
        return OnlineSettlement(found.version, verdict, "refused")
    # A decision that records no baseline cannot be checked against today's champion.
    baseline = found.tags.get(TAG_BASELINE_VERSION) or None
    try:
        move = set_bundle_alias(
            client,
            name,
            found.version,
            "champion",
            evaluation_run_id=found.run_id or "",
            decision_summary=f"champion after online evidence: {verdict.reason}",
            expected_champion=baseline,
        )
    except StaleDecisionError as exc:
        client.set_model_version_tag(name, found.version, TAG_OUTCOME, "stale")
        return OnlineSettlement(found.version, verdict, "stale", str(exc))
    client.set_model_version_tag(name, found.version, TAG_OUTCOME, "champion")
    # The challenger became the champion: no arm is left to roll out.
    if current_alias_version(client, name, CHALLENGER) == found.version:
        client.delete_registered_model_alias(name, CHALLENGER)
    return OnlineSettlement(
        found.version, verdict, "promoted", f"v{move.previous_version or '-'} → v{found.version}"
    )
