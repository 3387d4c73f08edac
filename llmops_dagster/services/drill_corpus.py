"""The synthetic corpus of the cluster drills (tests/integration/test_es_cluster.py and
benchmarks/cluster.py): documents whose right answer is known without a model.

Each document carries a code word (BM25 finds it) and a deterministic unit vector; random
384-dim vectors are nearly orthogonal, so a slightly perturbed copy of a document's vector has
that document as its nearest neighbour. A drill search (:func:`drill_search`) therefore knows
which document must rank first, and any failed shard or wrong first hit is an error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DIMS = 384
MODEL_ID = "synthetic-unit-vectors"


def unit_vector(seed: int, dims: int = DIMS) -> list[float]:
    """A deterministic unit vector."""
    v = np.random.default_rng(seed).standard_normal(dims)
    return (v / np.linalg.norm(v)).tolist()


def query_vector(doc: int, dims: int = DIMS) -> list[float]:
    """Document ``doc``'s vector, perturbed: that document is its nearest neighbour."""
    v = np.asarray(unit_vector(doc, dims)) + 0.1 * np.asarray(unit_vector(100_000 + doc, dims))
    return (v / np.linalg.norm(v)).tolist()


def chunk_id(doc: int, width: int) -> str:
    return f"c{doc:0{width}d}"


def drill_docs(count: int, *, width: int = 5) -> list[dict[str, Any]]:
    """``count`` index rows in the project's chunk-index shape; ids zero-padded to ``width``."""
    return [
        {
            "chunk_id": chunk_id(i, width),
            "doc_id": f"fs:runbook-{i:0{width}d}.md",
            "title": f"Runbook {i}",
            "text": f"Runbook page {i} of the cluster drill. Its code word is kw{i:0{width}d}x.",
            "position": 0,
            "model_id": MODEL_ID,
            "embedding": unit_vector(i),
        }
        for i in range(count)
    ]


def drill_search(client: Any, index: str, doc: int, *, width: int = 5) -> None:
    """BM25 (the document's code word) + kNN (its perturbed vector) in one request; raises
    RuntimeError unless every shard answered and document ``doc`` ranks first."""
    response = client.search(
        index=index,
        query={"match": {"text": f"kw{doc:0{width}d}x"}},
        knn={"field": "embedding", "query_vector": query_vector(doc), "k": 5,
             "num_candidates": 20},
        size=5,
        source=False,
        allow_partial_search_results=False,
    )  # fmt: skip
    ids = [hit["_id"] for hit in response["hits"]["hits"]]
    expected = chunk_id(doc, width)
    if response["_shards"]["failed"] or not ids or ids[0] != expected:
        raise RuntimeError(f"search for {expected}: shards {response['_shards']}, hits {ids}")
