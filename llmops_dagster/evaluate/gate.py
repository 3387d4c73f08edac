"""Quality gate (absolute floors) and the registry's promotion audit tags.

Why a gate that decides: scores nobody acts on (a WARN-only check) let a regression ship. Here
a candidate version becomes ``champion`` only if every configured threshold holds; otherwise
the alias is untouched and the result lists each failing metric with its value, threshold and
shortfall.

Rules:
- A threshold on a metric that was not measured fails (a gate never passes on a metric it
  did not see).
- Judge metrics gate only when the judge is declared capable (``judge_capable``); otherwise
  their thresholds are reported as advisory and never block.
- Promotion (``rag.bundle.set_bundle_alias``) is audited on the model versions with the tag
  names below: the new champion gets ``previous_champion`` (the version it replaced, "" if
  none), ``champion_promoted_at`` and the evaluation run id; the old one gets
  ``champion_replaced_by``. Rollback follows ``previous_champion``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

JUDGE_METRIC_KEYS = frozenset({"answer_relevancy", "faithfulness", "geval_correctness"})

TAG_PREVIOUS = "previous_champion"
TAG_PROMOTED_AT = "champion_promoted_at"
TAG_EVAL_RUN = "champion_evaluation_run_id"
TAG_REPLACED_BY = "champion_replaced_by"
TAG_REPLACED_AT = "champion_replaced_at"
TAG_ROLLED_BACK_FROM = "champion_rolled_back_from"


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
