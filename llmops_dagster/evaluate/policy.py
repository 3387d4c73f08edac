"""Promotion policy: floors *and* a paired comparison against the baseline decide promotion.

Why floors are not enough: a candidate that clears every absolute floor can still be worse
than the champion it would replace. Here a candidate becomes champion only when, on the same
golden cases, its primary metric is better than the baseline's (the confidence interval's low
end above minus the non-inferiority margin, and the mean difference positive when
``require_improvement``) and no guard metric may have regressed by more than its margin.

Every way a gate could be made toothless (no thresholds, too few cases) refuses unless the
policy explicitly allows it, and then the override is recorded on the decision so it shows in
the run, not only in a config file. The minimum-case rule holds per metric too: a metric the
policy reads (the primary, the guards, the gating floors) is compared only over the cases
scored on both sides (judge metrics: the judged sample), and fewer of them than ``min_cases``
refuses like a small run does.

Cost: each answer's prompt + completion tokens are compared like a metric (lower is better)
when both sides know them, and a candidate whose mean tokens per answer exceed
``max_cost_ratio`` times the baseline's is held back like a regressed guard (it stays
challenger). A baseline that used no model (0 tokens: the extractive answerer) makes any model
candidate infinitely dearer: it is held back too, by the letter of the rule — set
``max_cost_ratio`` to null to compare quality alone. Tokens, not currency: for a model run in
this process the price is 0 and the tokens are what the CPU spends; for a priced endpoint the
currency cost is tokens times its prices (``serving/pricing.py``), so the ratio is the same
when both sides use one endpoint.

Online evidence: with ``min_online_answers`` > 0 a candidate the offline comparison would
promote (approval ``auto``, against a champion) becomes ``challenger`` with outcome
``awaiting_online``; the requirement (N and ``online_margins``) is carried on the decision and
recorded on its version, and the online comparison of served answers settles it
(:mod:`llmops_dagster.evaluate.online_gate`). Without a champion nothing serves to compare
against online, so the rule does not apply (said in the reasons). With ``approval: manual``
the person approving decides (the outcome stays ``awaiting_approval``).

Errors: a side that errored on more than ``max_error_rate`` of the paired cases of any
compared metric refuses the decision (no override): an errored case scores 0, so a baseline
that fails often makes any candidate look better, and a candidate that fails often is broken.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from llmops_dagster.evaluate.compare import MetricComparison
from llmops_dagster.evaluate.gate import GateConfig, GateResult, evaluate_gate
from llmops_dagster.evaluate.online_gate import (
    DEFAULT_ONLINE_MARGINS,
    OnlineRequirement,
    validate_online,
)

Outcome = Literal["champion", "challenger", "awaiting_approval", "awaiting_online", "refused"]

DEFAULT_GUARDS: dict[str, float] = {"recall_at_5": 0.02, "ndcg_at_10": 0.02, "mrr_at_10": 0.02}
#: Largest share of errored cases either side may have on a compared metric. Deterministic
#: metrics do not error on sound inputs (0 errors is the norm); 5 % leaves room for a capable
#: remote judge's occasional failed call while one failure in 10 cases already refuses.
DEFAULT_MAX_ERROR_RATE = 0.05
#: Largest mean tokens per answer a candidate may spend, as a multiple of the baseline's. 1.5
#: lets a longer prompt (more chunks) or answer through while a bundle that doubles the bill
#: for the same quality is held back.
DEFAULT_MAX_COST_RATIO: float | None = 1.5
#: The compared per-case key the cost rule reads (``evaluate.run.TOKENS_KEY``).
COST_KEY = "tokens"


def _default_minimums() -> dict[str, float]:
    return dict(GateConfig().minimums)


def _default_maximums() -> dict[str, float]:
    return dict(GateConfig().maximums)


@dataclass(frozen=True)
class PromotionPolicy:
    """What a candidate must show to be promoted. Margins are in the metric's own units.

    ``guards``: metric → largest regression allowed (the CI low end of the gain must be ≥
    −margin). The guard defaults use the keys the evaluation writes (``metrics.MRR`` is
    ``mrr_at_10``). ``approval="manual"``: a passing candidate waits for a person.
    ``max_error_rate``: the share of errored paired cases (either side, any compared metric)
    above which the decision is refused. ``min_online_answers`` (0 = off): a candidate that
    would be promoted first waits, as challenger, for that many served answers per arm
    non-inferior within ``online_margins`` (online metric → allowed regression).
    """

    primary: str = "token_f1"
    primary_margin: float = 0.0
    require_improvement: bool = True
    guards: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_GUARDS))
    minimums: Mapping[str, float] = field(default_factory=_default_minimums)
    maximums: Mapping[str, float] = field(default_factory=_default_maximums)
    min_cases: int = 30
    approval: Literal["auto", "manual"] = "auto"
    allow_few_cases: bool = False
    allow_no_thresholds: bool = False
    judge_capable: bool = False
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    max_cost_ratio: float | None = DEFAULT_MAX_COST_RATIO
    min_online_answers: int = 0
    online_margins: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_ONLINE_MARGINS)
    )

    def __post_init__(self) -> None:
        validate_online(self.min_online_answers, self.online_margins)
        if self.approval not in ("auto", "manual"):
            raise ValueError(f"approval must be 'auto' or 'manual', got {self.approval!r}")
        if self.primary_margin < 0 or any(v < 0 for v in self.guards.values()):
            raise ValueError("margins are allowed regressions and must be >= 0")
        if self.min_cases < 0:
            raise ValueError(f"min_cases must be >= 0, got {self.min_cases}")
        if self.max_cost_ratio is not None and not self.max_cost_ratio > 0:
            raise ValueError(
                f"max_cost_ratio is a multiple of the baseline's tokens per answer and must be "
                f"> 0 (null: no cost rule), got {self.max_cost_ratio}"
            )
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(
                f"max_error_rate is a fraction of cases in [0, 1], got {self.max_error_rate}"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PromotionPolicy:
        """From config. Absent keys keep their defaults; unknown keys raise, because a typo
        (``guard:`` for ``guards:``) would otherwise silently weaken the gate."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown promotion policy keys {unknown}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key in ("guards", "minimums", "maximums", "online_margins"):
            if key in data:
                kwargs[key] = {str(k): float(v) for k, v in (data[key] or {}).items()}
        casts: tuple[tuple[str, type], ...] = (
            ("primary", str),
            ("primary_margin", float),
            ("min_cases", int),
            ("max_error_rate", float),
            ("min_online_answers", int),
        )
        for key, cast in casts:
            if key in data:
                kwargs[key] = cast(data[key])
        if "max_cost_ratio" in data:
            ratio = data["max_cost_ratio"]
            kwargs["max_cost_ratio"] = None if ratio is None else float(ratio)
        for key in (
            "require_improvement",
            "allow_few_cases",
            "allow_no_thresholds",
            "judge_capable",
        ):
            if key in data:
                kwargs[key] = bool(data[key])
        if "approval" in data:
            kwargs["approval"] = str(data["approval"])
        return cls(**kwargs)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The policy's settings, by name (what a run config may set besides its own keys)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any], *, judge_capable: bool) -> PromotionPolicy:
        """The policy out of a flat run config (``rag_evaluation``'s): its keys named like the
        policy's fields, validated by :meth:`from_mapping`; the run's other keys are not the
        policy's. ``judge_capable`` is the judge the run actually uses, not a run-config key:
        the config's own ``judge_capable`` is an override of the judge spec, None = unset."""
        names = set(cls.field_names()) - {"judge_capable"}
        chosen = {key: value for key, value in config.items() if key in names}
        return cls.from_mapping({**chosen, "judge_capable": judge_capable})

    def gate_config(self) -> GateConfig:
        return GateConfig(
            minimums=dict(self.minimums),
            maximums=dict(self.maximums),
            judge_capable=self.judge_capable,
        )

    def as_params(self) -> dict[str, str]:
        """Flat string params for MLflow (``policy.*`` plus the floors' ``gate.*``)."""
        params = {
            "policy.primary": self.primary,
            "policy.margin": str(self.primary_margin),
            "policy.require_improvement": str(self.require_improvement).lower(),
            "policy.min_cases": str(self.min_cases),
            "policy.approval": self.approval,
            "policy.allow_few_cases": str(self.allow_few_cases).lower(),
            "policy.allow_no_thresholds": str(self.allow_no_thresholds).lower(),
            "policy.max_error_rate": str(self.max_error_rate),
            "policy.max_cost_ratio": str(self.max_cost_ratio),
            "policy.min_online_answers": str(self.min_online_answers),
        }
        params.update({f"policy.guard.{k}": str(v) for k, v in sorted(self.guards.items())})
        params.update(
            {f"policy.online_margin.{k}": str(v) for k, v in sorted(self.online_margins.items())}
        )
        params.update(self.gate_config().as_params())
        return params


@dataclass(frozen=True)
class Decision:
    """The outcome with every reason for it. ``overrides``: safety rules the policy waived.
    ``baseline_version``: the registry version of the champion bundle the candidate was
    compared with (None: the base model, there was no champion). ``online``: what the
    candidate must show online before it becomes champion (outcome ``awaiting_online``)."""

    outcome: Outcome
    reasons: tuple[str, ...]
    overrides: tuple[str, ...]
    gate: GateResult
    comparisons: tuple[MetricComparison, ...]
    baseline: str = ""
    baseline_version: str | None = None
    online: OnlineRequirement | None = None

    @property
    def promotes(self) -> bool:
        return self.outcome == "champion"

    @property
    def passed_floors(self) -> bool:
        """The floors held *and* there was at least one gating floor (vacuous ≠ passed)."""
        return self.gate.passed and bool(self.gate.checked)

    def summary(self) -> str:
        versus = self.baseline or "baseline"
        if self.baseline_version is not None:
            versus += f", baseline version {self.baseline_version}"
        text = f"{self.outcome} (vs {versus}): " + "; ".join(self.reasons)
        if self.overrides:
            text += " [overrides: " + "; ".join(self.overrides) + "]"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "promotes": self.promotes,
            "baseline": self.baseline,
            "baseline_version": self.baseline_version,
            "online_requirement": self.online.to_dict() if self.online is not None else None,
            "reasons": list(self.reasons),
            "overrides": list(self.overrides),
            "gate": self.gate.to_dict(),
            "comparisons": [c.as_row() for c in self.comparisons],
        }


def _check_comparisons(
    policy: PromotionPolicy, by_metric: Mapping[str, MetricComparison], baseline: str
) -> tuple[bool, list[str]]:
    """Primary and guards; returns (passed, reasons). Missing guards are noted, not blocking."""
    reasons: list[str] = []
    primary = by_metric[policy.primary]
    gain, low, _ = primary.improvement()
    margin = policy.primary_margin
    ok = True
    if not low > -margin:
        ok = False
        reasons.append(
            f"primary {primary.describe()}: interval low end {low:+.4f} is not above "
            f"-{margin:g} (regression vs {baseline} not ruled out)"
        )
    if policy.require_improvement and not gain > 0:
        ok = False
        reasons.append(
            f"primary {primary.describe()}: diff {primary.diff:+.4f} is no improvement over "
            f"{baseline} (require_improvement)"
        )
    if ok:
        reasons.append(f"primary {primary.describe()} vs {baseline}")
    for metric, guard_margin in sorted(policy.guards.items()):
        comp = by_metric.get(metric)
        if comp is None:
            reasons.append(f"guard {metric} was not compared (not checked)")
            continue
        _, g_low, _ = comp.improvement()
        if g_low >= -guard_margin:
            reasons.append(f"guard {comp.describe()} held (allowed regression {guard_margin})")
        else:
            ok = False
            reasons.append(
                f"guard {comp.describe()}: interval low end {g_low:+.4f} is below "
                f"-{guard_margin:g} (may have regressed vs {baseline})"
            )
    return ok, reasons


def _check_cost(
    policy: PromotionPolicy, by_metric: Mapping[str, MetricComparison], baseline: str
) -> tuple[bool, list[str]]:
    """The cost rule: mean tokens per answer, candidate ÷ baseline, at most ``max_cost_ratio``
    (over the cases both sides know the tokens of). Not compared → noted, not blocking."""
    if policy.max_cost_ratio is None:
        return True, []
    comp = by_metric.get(COST_KEY)
    if comp is None or comp.n == 0:
        return True, ["cost: tokens per answer not known on both sides (not checked)"]
    limit = policy.max_cost_ratio
    cand, base = comp.candidate_mean, comp.baseline_mean
    if base > 0:
        ratio = cand / base
        text = f"{cand:.0f} vs {base:.0f} tokens per answer = {ratio:.2f}x {baseline}"
    else:
        ratio = math.inf if cand > 0 else 1.0
        text = f"{cand:.0f} tokens per answer where {baseline} spends none"
    if ratio <= limit:
        return True, [f"cost held: {text} (max_cost_ratio {limit:g})"]
    return False, [f"cost: {text} exceeds max_cost_ratio {limit:g}"]


def _read_metrics(policy: PromotionPolicy, gate: GateResult) -> list[str]:
    """The metrics the decision rests on: primary, guards, gating floors (in that order)."""
    return list(dict.fromkeys([policy.primary, *sorted(policy.guards), *gate.checked]))


def _check_metric_cases(
    policy: PromotionPolicy,
    by_metric: Mapping[str, MetricComparison],
    gate: GateResult,
    n_cases: int,
    reasons: list[str],
    overrides: list[str],
) -> None:
    """The minimum-case rule per read metric. A metric compared on fewer paired cases than the
    run has (a judge sample) is held to ``min_cases`` itself; one the run-level rule already
    covers (n = n_cases) is not reported twice. n = 0 is never overridable: nothing was
    compared."""
    for metric in _read_metrics(policy, gate):
        comp = by_metric.get(metric)
        if comp is None:
            continue
        if comp.n == 0:
            reasons.append(f"{metric} was not compared: no case scored on both sides (n=0)")
        elif comp.n < policy.min_cases and comp.n < n_cases:
            problem = f"{metric} compared on {comp.n} < {policy.min_cases} paired cases"
            if policy.allow_few_cases:
                overrides.append(f"allow_few_cases: {problem}")
            else:
                reasons.append(f"too few cases for {problem} (min_cases)")


def _check_error_rates(
    policy: PromotionPolicy,
    comparisons: Sequence[MetricComparison],
    baseline_label: str,
    reasons: list[str],
) -> None:
    """Refuse when either side errored on more than ``max_error_rate`` of a metric's pairs."""
    for comp in comparisons:
        for side, errors in (
            ("candidate", comp.candidate_errors),
            ("baseline", comp.baseline_errors),
        ):
            rate = comp.error_rate(side)
            if rate > policy.max_error_rate:
                who = f"baseline ({baseline_label})" if side == "baseline" else side
                reasons.append(
                    f"{who} errored on {comp.metric}: {errors}/{comp.n} cases = {rate:.1%} > "
                    f"max_error_rate {policy.max_error_rate:.1%}"
                )


def decide(
    policy: PromotionPolicy,
    *,
    n_cases: int,
    aggregates: Mapping[str, float | None],
    comparisons: Sequence[MetricComparison],
    baseline_label: str,
    baseline_version: str | None = None,
) -> Decision:
    """Apply ``policy``: refusals (no thresholds, too few cases — in the run or per read
    metric —, error rates, failed floors), then the paired comparison. All refusal reasons are
    collected so one run shows every problem. ``baseline_version`` is recorded on the
    decision (the champion version compared with; None = the base model)."""
    gate = evaluate_gate(aggregates, policy.gate_config())
    comps = tuple(comparisons)
    by_metric: dict[str, MetricComparison] = {}
    for comp in comps:
        if comp.metric in by_metric:
            raise ValueError(f"metric {comp.metric!r} compared more than once")
        by_metric[comp.metric] = comp
    reasons: list[str] = []
    overrides: list[str] = []

    def result(outcome: Outcome, online: OnlineRequirement | None = None) -> Decision:
        return Decision(
            outcome,
            tuple(reasons),
            tuple(overrides),
            gate,
            comps,
            baseline_label,
            baseline_version,
            online,
        )

    if not gate.checked:
        if not policy.minimums and not policy.maximums:
            problem = "no thresholds: a gate without thresholds passes anything"
        else:
            problem = (
                "no gating thresholds (judge-metric floors are advisory while judge_capable is "
                "false): a gate without thresholds passes anything"
            )
        if policy.allow_no_thresholds:
            overrides.append(f"allow_no_thresholds: {problem}")
        else:
            reasons.append(problem)
    if n_cases < policy.min_cases:
        problem = f"{n_cases} < {policy.min_cases} cases"
        if policy.allow_few_cases:
            overrides.append(f"allow_few_cases: {problem}")
        else:
            reasons.append(f"too few cases: {problem} (min_cases)")
    _check_metric_cases(policy, by_metric, gate, n_cases, reasons, overrides)
    _check_error_rates(policy, comps, baseline_label, reasons)
    if not gate.passed:
        reasons.extend(f"floor failed: {f.describe()}" for f in gate.failures)
    if reasons:
        return result("refused")
    if policy.primary not in by_metric:
        reasons.append(f"primary metric {policy.primary} was not compared")
        return result("refused")
    passed, comparison_reasons = _check_comparisons(policy, by_metric, baseline_label)
    reasons.extend(comparison_reasons)
    affordable, cost_reasons = _check_cost(policy, by_metric, baseline_label)
    reasons.extend(cost_reasons)
    if not (passed and affordable):
        return result("challenger")
    if policy.approval == "manual":
        return result("awaiting_approval")
    if policy.min_online_answers > 0:
        online = OnlineRequirement(policy.min_online_answers, dict(policy.online_margins))
        if baseline_version is None:
            reasons.append(
                f"online evidence not required: no champion serves to compare with "
                f"(min_online_answers {policy.min_online_answers})"
            )
            return result("champion")
        reasons.append(f"awaits online evidence against v{baseline_version}: {online.describe()}")
        return result("awaiting_online", online)
    return result("champion")
