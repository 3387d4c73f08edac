"""Walking the lineage chain back from any MLflow run (or registered model version).

Each asset run names its upstream runs in ``upstream.<asset_key>`` tags (see ``lineage.py``),
so the chain is a graph walk over MLflow alone: no Dagster instance is needed to answer
"which data, chunks, index, model, prompt and code produced this score?".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from llmops_dagster.tracking.lineage import (
    TAG_ASSET_KEY,
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN,
    UPSTREAM_TAG_PREFIX,
)

# Tags worth showing per step, in the order a reader follows the chain.
FACT_TAGS = (
    "golden.digest",
    "golden.name",
    "model.uri",
    "llmops.base_model_id",
    "prompt.version",
    "llmops.prompt_version",
    "index.name",
    "index.alias",
    "embedding.model_id",
    "chunk_set.digest",
    "llmops.dataset_digest",
    "dataset.digest",
    "documents.digest",
    "dlt.load_ids",
)


class LineageError(LookupError):
    """A run or model version named in the chain cannot be found."""


@dataclass
class LineageNode:
    run_id: str
    asset_key: str
    dagster_run_id: str
    code_version: str
    facts: dict[str, str] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)  # asset key -> run id


@dataclass
class LineageChain:
    start: str
    nodes: list[LineageNode]
    unresolved: list[str] = field(default_factory=list)  # run ids named but not found

    @property
    def complete(self) -> bool:
        return not self.unresolved

    def by_asset(self) -> dict[str, LineageNode]:
        return {node.asset_key: node for node in self.nodes}


def resolve_start(client: Any, ref: str) -> str:
    """A run id from a run id, ``models:/name/<version>`` or ``models:/name@alias``."""
    from mlflow.exceptions import MlflowException

    if ref.startswith("models:/"):
        body = ref.removeprefix("models:/")
        try:
            if "@" in body:
                name, alias = body.split("@", 1)
                version = client.get_model_version_by_alias(name, alias)
            else:
                name, number = body.rsplit("/", 1)
                version = client.get_model_version(name, number)
        except MlflowException as exc:
            raise LineageError(f"no model version {ref}: {exc}") from exc
        if not version.run_id:
            raise LineageError(f"{ref} was registered without a run id")
        return str(version.run_id)
    return ref


def trace(client: Any, ref: str) -> LineageChain:
    """Breadth-first walk from ``ref`` through every ``upstream.*`` tag."""
    from mlflow.exceptions import MlflowException

    start = resolve_start(client, ref)
    nodes: list[LineageNode] = []
    unresolved: list[str] = []
    seen: set[str] = set()
    queue: deque[str] = deque([start])
    while queue:
        run_id = queue.popleft()
        if run_id in seen:
            continue
        seen.add(run_id)
        try:
            tags = client.get_run(run_id).data.tags
        except MlflowException:
            unresolved.append(run_id)
            continue
        upstream = {
            key.removeprefix(UPSTREAM_TAG_PREFIX): value
            for key, value in tags.items()
            if key.startswith(UPSTREAM_TAG_PREFIX)
        }
        nodes.append(
            LineageNode(
                run_id=run_id,
                asset_key=tags.get(TAG_ASSET_KEY, "?"),
                dagster_run_id=tags.get(TAG_DAGSTER_RUN, ""),
                code_version=tags.get(TAG_CODE_VERSION, ""),
                facts={k: tags[k] for k in FACT_TAGS if tags.get(k)},
                upstream=upstream,
            )
        )
        queue.extend(upstream.values())
    if start in unresolved:
        raise LineageError(f"no MLflow run {start}")
    return LineageChain(start=start, nodes=nodes, unresolved=unresolved)
