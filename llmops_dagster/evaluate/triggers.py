"""What re-evaluates the champion, and whether it still holds up.

A new adapter version is watched by the registry sensor. The other changes that can change
answers — a new prompt template, a new golden set, the alias moved to another index (a rebuild
or rollback) — are fingerprinted here (:class:`EvaluationInputs`); a sensor compares the
fingerprint with the one in its cursor and asks for an evaluation of the champion's own
configuration on the new inputs. That evaluation's baseline is the champion as it answers
*today*; :func:`champion_regression` compares it with the per-case scores recorded when it was
promoted, so a reindex that hurts the champion fails a check with the comparison attached.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmops_dagster.evaluate.compare import MetricComparison, compare_runs
from llmops_dagster.evaluate.policy import PromotionPolicy
from llmops_dagster.models.spec import GeneratorPin
from llmops_dagster.rag.bundle import RagBundle


@dataclass(frozen=True)
class EvaluationInputs:
    """The inputs besides the bundle itself that an evaluation depends on."""

    prompt_version: str  # content hash of the repository's template
    golden_digest: str
    index_name: str | None  # what the alias points at

    def changes_since(self, previous: EvaluationInputs | None) -> list[str]:
        if previous is None:
            return []
        labels = {
            "prompt_version": "new prompt version",
            "golden_digest": "new golden set digest",
            "index_name": "alias moved to another index",
        }
        mine, theirs = asdict(self), asdict(previous)
        return [labels[key] for key in labels if mine[key] != theirs[key]]

    def to_cursor(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> EvaluationInputs | None:
        if not cursor:
            return None
        return cls(**json.loads(cursor))


def generator_change(champion: RagBundle, configured: GeneratorPin) -> str | None:
    """Why the champion's generator is not the one the settings make now, or None.

    The champion keeps answering with its own pinned generator; a different configured one
    (model, weights, endpoint model name, decoding) is a new candidate to evaluate. An
    extractive champion has no model: generator settings do not concern it.
    """
    if champion.generator != "llm" or champion.generator_pin == configured:
        return None
    return (
        f"generator settings differ from the champion's ({champion.generator_pin.describe()}"
        f" → {configured.describe()})"
    )


def rerun_config(bundle: RagBundle) -> dict[str, Any]:
    """``rag_evaluation`` config that re-creates ``bundle``'s settings as the candidate."""
    config: dict[str, Any] = {
        "generator": bundle.generator,
        "k": bundle.retrieval_k,
        "mode": bundle.retrieval_mode,
        "metrics_depth": bundle.metrics_depth,
        "max_new_tokens": bundle.max_new_tokens,
    }
    if bundle.generator == "llm":
        config["model_version"] = (
            bundle.adapter_uri.rsplit("/", 1)[1] if bundle.adapter_uri else "base"
        )
    return config


def read_table_artifact(path: Path) -> list[dict[str, Any]]:
    """Rows of a table MLflow logged with ``log_table`` (``{"columns", "data"}`` JSON)."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    columns = payload["columns"]
    return [dict(zip(columns, row, strict=True)) for row in payload["data"]]


def champion_regression(
    now_rows: Sequence[Mapping[str, Any]],
    recorded_rows: Sequence[Mapping[str, Any]],
    policy: PromotionPolicy,
    *,
    metrics: Sequence[str],
    n_resamples: int = 2000,
) -> tuple[bool, list[MetricComparison], list[str]]:
    """Compare the champion today with its scores at promotion, on the cases both answered.

    Returns (regressed, comparisons, reasons). It regressed when the primary metric is worse
    with the whole interval below zero, or a guard's interval reaches below its margin.
    """

    def key(row: Mapping[str, Any]) -> tuple[str, str]:
        # The same id with another question (an edited golden set) is another case.
        return str(row["case_id"]), str(row.get("question", ""))

    shared = {key(r) for r in now_rows} & {key(r) for r in recorded_rows}
    if not shared:
        return False, [], ["no case in common with the recorded evaluation: not compared"]
    now = [r for r in now_rows if key(r) in shared]
    then = [r for r in recorded_rows if key(r) in shared]
    usable = [m for m in metrics if all(m in r for r in then)]
    comparisons = compare_runs(now, then, usable, n_resamples=n_resamples)
    by_metric = {c.metric: c for c in comparisons}
    reasons: list[str] = []
    primary = by_metric.get(policy.primary)
    if primary is not None and primary.improvement()[2] < 0:
        reasons.append(f"primary {primary.describe()} is worse than at promotion")
    for metric, margin in sorted(policy.guards.items()):
        guard = by_metric.get(metric)
        if guard is not None and guard.improvement()[1] < -margin:
            reasons.append(f"guard {guard.describe()} fell beyond {margin:g} since promotion")
    return bool(reasons), comparisons, reasons
