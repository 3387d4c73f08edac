"""A content-hash embedding cache in the warehouse: no text is ever embedded twice by one model.

Keyed by ``(model_id, content_hash)``, so the same sentence in two documents, or a chunk that
survives a re-chunk unchanged, costs one forward pass in total; switching the model id starts a
fresh key space instead of mixing vectors of different models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from llmops_dagster.embed.model import Embedder
from llmops_dagster.warehouse import PIPELINE_SCHEMA, Warehouse, as_warehouse

CACHE_TABLE = f"{PIPELINE_SCHEMA}.embedding_cache"


@dataclass(frozen=True)
class EmbeddingStats:
    requested: int  # distinct content hashes asked for
    cached: int  # already in the cache
    embedded: int  # computed now
    seconds: float  # time spent in the model
    model_id: str
    dims: int

    @property
    def texts_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def ensure_cache_table(con: Warehouse | Any) -> None:
    con = as_warehouse(con)
    con.ensure_schema(PIPELINE_SCHEMA)
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (
            model_id VARCHAR NOT NULL,
            content_hash VARCHAR NOT NULL,
            dims INTEGER NOT NULL,
            vector REAL[] NOT NULL,  -- REAL: float32 on both engines (FLOAT is 8 bytes in PG)
            created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (model_id, content_hash)
        )"""
    )


def _hashes(hashes: Sequence[str]) -> pa.Table:
    return pa.table({"content_hash": pa.array(list(hashes), pa.string())})


def cached_hashes(con: Warehouse | Any, model_id: str, hashes: Sequence[str]) -> set[str]:
    if not hashes:
        return set()
    con = as_warehouse(con)
    with con.temp_table("_wanted_hashes", _hashes(hashes)):
        rows = con.fetchall(
            f"SELECT c.content_hash FROM {CACHE_TABLE} c "
            "JOIN _wanted_hashes w USING (content_hash) WHERE c.model_id = ?",
            [model_id],
        )
    return {r[0] for r in rows}


def embed_missing(
    con: Warehouse | Any,
    embedder: Embedder,
    items: Sequence[tuple[str, str]],
    *,
    batch_size: int = 64,
    write_every: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> EmbeddingStats:
    """Embed the ``(content_hash, text)`` pairs whose hash this model has never embedded.

    Writes to the cache every ``write_every`` texts, so an interrupted run keeps what it paid for.
    """
    con = as_warehouse(con)
    ensure_cache_table(con)
    unique: dict[str, str] = {}
    for content_hash, text in items:
        unique.setdefault(content_hash, text)
    have = cached_hashes(con, embedder.model_id, list(unique))
    todo = [(h, t) for h, t in unique.items() if h not in have]
    seconds = 0.0
    done = 0
    for start in range(0, len(todo), write_every):
        block = todo[start : start + write_every]
        began = time.perf_counter()
        vectors = embedder.encode([t for _, t in block], batch_size=batch_size)
        seconds += time.perf_counter() - began
        table = pa.table(
            {
                "model_id": pa.array([embedder.model_id] * len(block), pa.string()),
                "content_hash": pa.array([h for h, _ in block], pa.string()),
                "dims": pa.array([embedder.dims] * len(block), pa.int32()),
                "vector": pa.array(list(vectors), pa.list_(pa.float32())),
            }
        )
        con.upsert_arrow(CACHE_TABLE, table, ["model_id", "content_hash"], update_columns=[])
        done += len(block)
        if progress:
            progress(done, len(todo))
    return EmbeddingStats(
        requested=len(unique),
        cached=len(have),
        embedded=len(todo),
        seconds=seconds,
        model_id=embedder.model_id,
        dims=embedder.dims,
    )


def load_vectors(
    con: Warehouse | Any, model_id: str, hashes: Sequence[str]
) -> dict[str, np.ndarray]:
    """Vectors for the given hashes (those missing from the cache are simply absent)."""
    if not hashes:
        return {}
    con = as_warehouse(con)
    with con.temp_table("_wanted_hashes", _hashes(hashes)):
        table = con.query_arrow(
            f"SELECT c.content_hash, c.vector FROM {CACHE_TABLE} c "
            "JOIN _wanted_hashes w USING (content_hash) WHERE c.model_id = ?",
            [model_id],
        )
    hashes_col = table.column("content_hash").to_pylist()
    flat = table.column("vector").combine_chunks()
    if len(hashes_col) == 0:
        return {}
    matrix = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(
        len(hashes_col), -1
    )
    return dict(zip(hashes_col, matrix, strict=True))
