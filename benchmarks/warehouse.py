"""Warehouse benchmark: the same SciFact reindex on DuckDB and on PostgreSQL.

What is timed, per warehouse, from empty pipeline tables: ``sync_documents`` → ``sync_chunks``
→ ``embed_missing`` → ``sync_index`` (rebuild of its own alias), i.e. the library calls the
Dagster assets make. The embedding *model* is excluded: the vectors are computed once, before
either timed run, into a warm DuckDB cache, and that cache is copied into each warehouse
(untimed, but the PostgreSQL copy is reported: it is the adapter's COPY path), so
``embed_missing`` only looks the vectors up — warehouse work — and must embed nothing. Both
warehouses must end with identical documents, chunk ids and index contents (ids + sync keys).

Usage::

    .venv/bin/python benchmarks/warehouse.py [../shared/bench/scifact] [--limit-docs N]
        [--postgres-url postgresql://…] [--es-url http://…]

Without ``--postgres-url`` a throw-away PostgreSQL cluster is started (Debian's binaries);
without ``--es-url`` a local Elasticsearch node is started on ``--es-port``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from llmops_dagster.config import apply_offline_env_defaults

apply_offline_env_defaults()  # this script is where the process starts
from results_file import write_results

from llmops_dagster.chunks.chunk_table import active_chunks, sync_chunks
from llmops_dagster.config import Settings
from llmops_dagster.documents.document_table import read_documents, sync_documents
from llmops_dagster.documents.normalize import NormalizedBatch
from llmops_dagster.embed.cache import CACHE_TABLE, embed_missing, ensure_cache_table
from llmops_dagster.embed.model import Embedder, load_embedder, load_tokenizer
from llmops_dagster.search.client import ClusterSpec, make_client
from llmops_dagster.search.sync import active_chunk_sync_keys, live_chunk_sync_keys, sync_index
from llmops_dagster.text.chunking import chunk_document
from llmops_dagster.tracking.digests import active_chunks_digest, documents_digest
from llmops_dagster.warehouse import Warehouse, connect_warehouse

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "bench" / "scifact"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "warehouse.json"


def load_documents(data: Path, limit: int | None) -> list[Any]:
    from throughput import read_jsonl, scifact_documents

    corpus = read_jsonl(data / "corpus.jsonl")
    return scifact_documents(corpus[:limit] if limit else corpus)


def make_chunker(settings: Settings) -> tuple[Callable[[str, str, str], list], str]:
    tokenizer = load_tokenizer(settings.models.embedding_model)
    size, overlap = settings.corpus.chunk_size_tokens, settings.corpus.chunk_overlap_tokens
    fingerprint = hashlib.sha256(
        f"{settings.models.embedding_model}|{size}|{overlap}".encode()
    ).hexdigest()[:16]

    def chunker(doc_id: str, text: str, fmt: str) -> list:
        return chunk_document(
            doc_id, text, tokenizer=tokenizer, chunk_size=size, overlap=overlap, fmt=fmt
        )

    return chunker, fingerprint


def chunk_items(con: Warehouse) -> list[tuple[str, str]]:
    table = active_chunks(con).select(["content_hash", "text"])
    return list(
        zip(table.column("content_hash").to_pylist(), table.column("text").to_pylist(), strict=True)
    )


def reindex(
    con: Warehouse,
    docs: list[Any],
    chunker: Callable[[str, str, str], list],
    fingerprint: str,
    embedder: Embedder,
    client: Any,
    alias: str,
) -> dict[str, Any]:
    """The timed part: documents → chunks → cached embeddings → index rebuild."""
    t: dict[str, Any] = {}
    started = mark = time.perf_counter()
    sync_documents(con, NormalizedBatch(documents=docs))
    t["documents_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    documents = read_documents(con).select(["doc_id", "content_hash", "text", "format"])
    chunks = sync_chunks(con, documents, chunker, fingerprint=fingerprint)
    t["chunks_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    stats = embed_missing(con, embedder, chunk_items(con))
    t["embedding_lookup_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    index = sync_index(
        client, con, alias=alias, model_id=embedder.model_id, dims=embedder.dims,
        mode="rebuild", keep=0,
    )  # fmt: skip
    t["index_s"] = time.perf_counter() - mark
    t["total_s"] = time.perf_counter() - started
    if stats.embedded:
        raise RuntimeError(f"{stats.embedded} texts were embedded: the warm cache was incomplete")
    t.update(active_chunks=chunks.active_chunks, indexed=index.indexed, cached=stats.cached)
    return t


def snapshot(con: Warehouse, client: Any, alias: str) -> dict[str, Any]:
    docs = sorted(con.fetchall("SELECT doc_id, content_hash FROM llmops.documents"))
    chunk_ids = sorted(
        r[0] for r in con.fetchall("SELECT chunk_id FROM llmops.chunks WHERE status = 'active'")
    )
    return {
        "documents": docs,
        "chunks": chunk_ids,
        "documents_digest": documents_digest(con),
        "chunks_digest": active_chunks_digest(con),
        "warehouse_keys": active_chunk_sync_keys(con),
        "index_keys": live_chunk_sync_keys(client, alias),
    }


@contextmanager
def local_postgres(work: Path) -> Iterator[str]:
    from llmops_dagster.services.postgres_local import start_postgres, stop_postgres

    pg = start_postgres(work / "pg", databases=("bench",))
    try:
        yield pg.url("bench")
    finally:
        stop_postgres(pg)
        shutil.rmtree(pg.data_dir, ignore_errors=True)


@contextmanager
def local_elasticsearch(settings: Settings, port: int) -> Iterator[str]:
    from llmops_dagster.services.elasticsearch_local import (
        fetch_distribution,
        start_node,
        stop_node,
    )
    from llmops_dagster.services.local import local_node

    fetch_distribution(settings.es_dist_dir, settings.local_node.version)
    node = local_node(
        settings, node_dir=settings.home / "elasticsearch" / f"bench-node-{port}", port=port
    )
    shutil.rmtree(node.node_dir / "data", ignore_errors=True)
    start_node(node)
    try:
        yield node.url
    finally:
        stop_node(node)


def main() -> None:
    # SIGTERM (``timeout``, a CI cancel) raises SystemExit, so the finally blocks stop the
    # PostgreSQL cluster and the Elasticsearch node this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit-docs", type=int, default=None)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--es-url", default=None)
    parser.add_argument("--es-port", type=int, default=9262)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    settings = Settings()
    docs = load_documents(args.data, args.limit_docs)
    work = Path(tempfile.mkdtemp(prefix="bench-warehouse-", dir=settings.home))
    suffix = uuid.uuid4().hex[:6]
    try:
        with (
            local_postgres(work) if not args.postgres_url else _given(args.postgres_url) as pg,
            (
                local_elasticsearch(settings, args.es_port)
                if not args.es_url
                else _given(args.es_url)
            ) as es_url,
        ):
            client = make_client(ClusterSpec(url=es_url, hint="--es-url"))
            embedder = load_embedder(
                settings.models.embedding_model,
                backend=settings.models.embedding_backend,
                cache_dir=settings.models_cache_dir,
                threads=settings.models.torch_threads,
            )
            chunker, fingerprint = make_chunker(settings)

            # Untimed: the vectors, once, into a warm DuckDB cache.
            print(f"{len(docs)} documents; embedding them once (untimed)", flush=True)
            mark = time.perf_counter()
            with connect_warehouse(url=None, duckdb_path=work / "warm.duckdb") as warm:
                sync_documents(warm, NormalizedBatch(documents=docs))
                documents = read_documents(warm).select(
                    ["doc_id", "content_hash", "text", "format"]
                )
                sync_chunks(warm, documents, chunker, fingerprint=fingerprint)
                warm_stats = embed_missing(warm, embedder, chunk_items(warm))
                vectors = warm.query_arrow(
                    f"SELECT model_id, content_hash, dims, vector FROM {CACHE_TABLE}"
                )
            warm_s = time.perf_counter() - mark

            runs: dict[str, dict[str, Any]] = {}
            snaps: dict[str, dict[str, Any]] = {}
            for kind, url in (("duckdb", None), ("postgres", pg)):
                alias = f"bench-wh-{kind}-{suffix}"
                print(f"timed reindex on {kind}", flush=True)
                with connect_warehouse(url=url, duckdb_path=work / "bench.duckdb") as con:
                    ensure_cache_table(con)
                    mark = time.perf_counter()
                    con.upsert_arrow(
                        CACHE_TABLE, vectors, ["model_id", "content_hash"], update_columns=[]
                    )
                    copy_s = time.perf_counter() - mark
                    runs[kind] = reindex(con, docs, chunker, fingerprint, embedder, client, alias)
                    runs[kind]["cache_copy_s"] = copy_s
                    snaps[kind] = snapshot(con, client, alias)
                client.indices.delete(index=f"{alias}-*", ignore_unavailable=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    duck, pg_run = runs["duckdb"], runs["postgres"]
    identical = snaps["duckdb"] == snaps["postgres"] and (
        snaps["postgres"]["index_keys"] == snaps["postgres"]["warehouse_keys"]
    )
    stages = ["documents_s", "chunks_s", "embedding_lookup_s", "index_s", "total_s"]
    print(f"{'stage':<22}{'duckdb':>10}{'postgres':>10}{'ratio':>8}")
    for stage in [*stages, "cache_copy_s"]:
        ratio = pg_run[stage] / duck[stage] if duck[stage] else float("nan")
        print(f"{stage:<22}{duck[stage]:>10.2f}{pg_run[stage]:>10.2f}{ratio:>8.2f}")
    print(
        f"docs {len(docs)}, active chunks {duck['active_chunks']}, vectors {vectors.num_rows}, "
        f"identical {identical}"
    )
    ratio = pg_run["total_s"] / duck["total_s"]
    data = {
        "docs": len(docs),
        "active_chunks": duck["active_chunks"],
        "vectors": vectors.num_rows,
        "duckdb_s": round(duck["total_s"], 3),
        "postgres_s": round(pg_run["total_s"], 3),
        "ratio": round(ratio, 3),
        "identical": identical,
        "timing_covers": "documents -> chunks -> embedding cache lookup (model excluded: vectors "
        "precomputed once into a warm cache and copied into each warehouse untimed) -> index "
        "rebuild; from empty pipeline tables",
        "stages": {
            kind: {k: round(v, 3) for k, v in run.items() if k.endswith("_s")}
            for kind, run in runs.items()
        },
        "warm_cache": {"embedded": warm_stats.embedded, "seconds": round(warm_s, 3)},
        "postgres_cache_copy_rows_per_s": round(vectors.num_rows / pg_run["cache_copy_s"], 1),
        "model_id": embedder.model_id,
    }
    write_results(
        args.results, data, {"docs": len(docs), "ratio": data["ratio"], "identical": identical}
    )
    print(f"wrote {args.results}")


@contextmanager
def _given(value: str) -> Iterator[str]:
    yield value


if __name__ == "__main__":
    main()
