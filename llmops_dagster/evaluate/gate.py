"""Quality gate and champion promotion in the MLflow model registry.

Why a gate that decides: scores nobody acts on (a WARN-only check) let a regression ship. Here
a candidate version becomes ``champion`` only if every configured threshold holds; otherwise
the alias is untouched and the result lists each failing metric with its value, threshold and
shortfall.

Rules:
- A threshold on a metric that was not measured fails (a gate never passes on a metric it
  did not see).
- Judge metrics gate only when the judge is declared capable (``judge_capable``); otherwise
  their thresholds are reported as advisory and never block.
- Promotion is audited on the model versions themselves: the new champion gets
  ``previous_champion`` (the version it replaced, "" if none), ``champion_promoted_at`` and the
  evaluation run id; the old one gets ``champion_replaced_by``. The tags are written before the
  alias moves, so a crash in between leaves the old champion serving. Rollback follows
  ``previous_champion``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_ALIAS = "champion"
JUDGE_METRIC_KEYS = frozenset({"answer_relevancy", "faithfulness", "geval_correctness"})

TAG_PREVIOUS = "previous_champion"
TAG_PROMOTED_AT = "champion_promoted_at"
TAG_EVAL_RUN = "champion_evaluation_run_id"
TAG_REPLACED_BY = "champion_replaced_by"
TAG_REPLACED_AT = "champion_replaced_at"
TAG_GATE_PASSED = "gate_passed"
TAG_GATE_FAILURES = "gate_failures"
TAG_ROLLED_BACK_FROM = "champion_rolled_back_from"
_MAX_TAG_CHARS = 5000  # MLflow's model-version tag value limit


@dataclass(frozen=True)
class GateConfig:
    """Thresholds per metric key. ``minimums``: value must be ≥; ``maximums``: ≤ (latency).

    The defaults read only retrieval and deterministic metrics; they are starting points for the
    sample corpus, meant to be set from configuration (:meth:`from_mapping`). Measured on 10
    golden cases with SmolLM2-135M (dense top-3): recall@5 1.0, nDCG@10 0.91, token F1 0.09 —
    a 135M generator paraphrases, so the answer floor is low on purpose.
    """

    minimums: Mapping[str, float] = field(
        default_factory=lambda: {"recall_at_5": 0.6, "ndcg_at_10": 0.5, "token_f1": 0.05}
    )
    maximums: Mapping[str, float] = field(default_factory=dict)
    judge_capable: bool = False
    judge_metric_keys: frozenset[str] = JUDGE_METRIC_KEYS

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GateConfig:
        """From config such as ``{"minimums": {...}, "maximums": {...}, "judge_capable": x}``."""
        return cls(
            minimums={str(k): float(v) for k, v in (data.get("minimums") or {}).items()},
            maximums={str(k): float(v) for k, v in (data.get("maximums") or {}).items()},
            judge_capable=bool(data.get("judge_capable", False)),
        )

    def is_judge_metric(self, key: str) -> bool:
        return key in self.judge_metric_keys or key.startswith("geval_")

    def as_params(self) -> dict[str, str]:
        """Flat ``gate.min.<metric>`` / ``gate.max.<metric>`` params for MLflow."""
        params = {f"gate.min.{k}": str(v) for k, v in sorted(self.minimums.items())}
        params.update({f"gate.max.{k}": str(v) for k, v in sorted(self.maximums.items())})
        params["gate.judge_capable"] = str(self.judge_capable).lower()
        return params


@dataclass(frozen=True)
class GateFailure:
    """A metric that missed its threshold. ``value`` None = not measured."""

    metric: str
    value: float | None
    threshold: float
    shortfall: float
    direction: str = ">="

    def describe(self) -> str:
        shown = "not measured" if self.value is None else f"{self.value:.4f}"
        return (
            f"{self.metric} = {shown}, needs {self.direction} {self.threshold}"
            f" (short by {self.shortfall:.4f})"
        )


@dataclass(frozen=True)
class GateResult:
    """``passed`` and why not. ``advisory``: judge-metric misses that did not gate."""

    passed: bool
    failures: tuple[GateFailure, ...] = ()
    advisory: tuple[GateFailure, ...] = ()
    checked: tuple[str, ...] = ()

    def summary(self) -> str:
        if self.passed:
            return f"gate passed ({len(self.checked)} thresholds)"
        return "gate failed: " + "; ".join(f.describe() for f in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": [asdict(f) for f in self.failures],
            "advisory": [asdict(f) for f in self.advisory],
            "checked": list(self.checked),
        }


def evaluate_gate(aggregates: Mapping[str, float | None], config: GateConfig) -> GateResult:
    """Check aggregate metrics against ``config``; shortfall = how far from the threshold."""
    failures: list[GateFailure] = []
    advisory: list[GateFailure] = []
    checked: list[str] = []
    rules = [(k, v, ">=") for k, v in config.minimums.items()] + [
        (k, v, "<=") for k, v in config.maximums.items()
    ]
    for key, threshold, direction in sorted(rules):
        raw = aggregates.get(key)
        value = None if raw is None else float(raw)
        if value is None:
            failure: GateFailure | None = GateFailure(key, None, threshold, float("inf"), direction)
        elif direction == ">=" and value < threshold:
            failure = GateFailure(key, value, threshold, threshold - value, direction)
        elif direction == "<=" and value > threshold:
            failure = GateFailure(key, value, threshold, value - threshold, direction)
        else:
            failure = None
        gates = not config.is_judge_metric(key) or config.judge_capable
        if gates:
            checked.append(key)
        if failure is not None:
            (failures if gates else advisory).append(failure)
    return GateResult(
        passed=not failures,
        failures=tuple(failures),
        advisory=tuple(advisory),
        checked=tuple(checked),
    )


# --------------------------------------------------------------------------------------------
# Registry: promotion and rollback
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionResult:
    """What happened to the alias. ``promoted`` False = the alias did not move."""

    promoted: bool
    model_name: str
    alias: str
    version: str
    previous_version: str | None
    reason: str
    failures: tuple[GateFailure, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = [asdict(f) for f in self.failures]
        return data


class RollbackError(RuntimeError):
    """No version to roll back to (no champion, or no recorded previous champion)."""


def current_alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def promote_champion(
    client: MlflowClient,
    model_name: str,
    version: str | int,
    gate_result: GateResult,
    *,
    alias: str = DEFAULT_ALIAS,
    evaluation_run_id: str | None = None,
) -> PromotionResult:
    """On a passed gate point ``alias`` at ``version`` (audit tags first); on a failed one
    leave the alias alone and record the failures on the candidate version."""
    version = str(version)
    client.get_model_version(model_name, version)  # fail fast on an unknown version
    previous = current_alias_version(client, model_name, alias)
    if not gate_result.passed:
        client.set_model_version_tag(model_name, version, TAG_GATE_PASSED, "false")
        failures_json = json.dumps([asdict(f) for f in gate_result.failures], default=str)
        client.set_model_version_tag(
            model_name, version, TAG_GATE_FAILURES, failures_json[:_MAX_TAG_CHARS]
        )
        return PromotionResult(
            False, model_name, alias, version, previous, gate_result.summary(), gate_result.failures
        )
    client.set_model_version_tag(model_name, version, TAG_GATE_PASSED, "true")
    if previous == version:
        return PromotionResult(
            True, model_name, alias, version, previous, f"already {alias}; alias unchanged"
        )
    stamp = _now()
    client.set_model_version_tag(model_name, version, TAG_PREVIOUS, previous or "")
    client.set_model_version_tag(model_name, version, TAG_PROMOTED_AT, stamp)
    if evaluation_run_id:
        client.set_model_version_tag(model_name, version, TAG_EVAL_RUN, evaluation_run_id)
    if previous is not None:
        client.set_model_version_tag(model_name, previous, TAG_REPLACED_BY, version)
        client.set_model_version_tag(model_name, previous, TAG_REPLACED_AT, stamp)
    client.set_registered_model_alias(model_name, alias, version)
    return PromotionResult(
        True,
        model_name,
        alias,
        version,
        previous,
        f"{alias} → v{version}" + (f" (was v{previous})" if previous else " (first champion)"),
    )


def rollback_champion(
    client: MlflowClient,
    model_name: str,
    *,
    alias: str = DEFAULT_ALIAS,
    to_version: str | int | None = None,
) -> PromotionResult:
    """Point ``alias`` back at ``to_version`` or, by default, at the current champion's
    recorded ``previous_champion``. Tags the restored version with where it came back from."""
    current = current_alias_version(client, model_name, alias)
    if to_version is None:
        if current is None:
            raise RollbackError(f"{model_name} has no @{alias} to roll back")
        tags = client.get_model_version(model_name, current).tags or {}
        target = tags.get(TAG_PREVIOUS) or None
        if target is None:
            raise RollbackError(
                f"{model_name} v{current} (@{alias}) records no {TAG_PREVIOUS}: "
                "nothing to roll back to"
            )
    else:
        target = str(to_version)
    client.get_model_version(model_name, target)  # must exist
    stamp = _now()
    if current is not None and current != target:
        client.set_model_version_tag(model_name, target, TAG_ROLLED_BACK_FROM, current)
        client.set_model_version_tag(model_name, current, TAG_REPLACED_BY, target)
        client.set_model_version_tag(model_name, current, TAG_REPLACED_AT, stamp)
    client.set_model_version_tag(model_name, target, TAG_PROMOTED_AT, stamp)
    client.set_registered_model_alias(model_name, alias, target)
    return PromotionResult(
        True,
        model_name,
        alias,
        target,
        current,
        f"rolled back {alias} to v{target} (was v{current})",
    )
