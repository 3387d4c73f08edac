"""Indexing throughput benchmark: every figure a ratio of two things measured in the same run.

Absolute times on a small shared machine are noise; ratios of interleaved or bracketing
measurements are not. Everything goes through the library code the Dagster assets call
(``sync_documents`` → ``sync_chunks`` → ``embed_missing`` → ``sync_index``), against a real
Elasticsearch node (``ELASTICSEARCH_URL``, or the local node from the settings).

Figures (targets from issue 8):

* ``p2_ratio`` end-to-end index throughput ÷ embedding-only ceiling (same chunk texts, model and
  batch size); the ceiling is measured right before and right after the pipeline run and
  averaged, so drifting background load hits both sides. Target ≥ 0.85.
* ``p3_ratio`` fast backend (onnx-int8) ÷ stock sentence-transformers fp32 throughput on the same
  chunk texts, slices interleaved ABBA (both shipped paths sort by length and pad per batch);
  ``p3.where_the_time_goes`` splits the int8 time into tokenization (+ batch assembly) and the
  ONNX Runtime forward pass. ``p3_ndcg_delta`` hybrid (RRF) nDCG@10 on SciFact with onnx-int8
  minus fp32 (full corpus unless ``--ndcg-docs``), the real quality criterion; ``p3.cosine`` the
  distribution (min, p1, mean) of cosine(int8, fp32) over every SciFact document vector.
  Targets ≥ 2.0 and ≤ 0.005.
* ``p4_ratio`` incremental run after 1 % of the documents changed ÷ the full run; asserts that
  exactly the new chunk texts were embedded. Target ≤ 0.10.
* ``p5_ratio`` hybrid p95 ÷ kNN-only p95, one ``search(k=10)`` per query, modes interleaved, query
  embedding included (as a RAG request sees it). Target ≤ 1.5.
* ``p8_ratio`` import time of ``llmops_dagster.definitions`` ÷ ``import dagster``, fresh
  subprocesses, best of N each, interleaved. Target ≤ 1.5.

Usage::

    .venv/bin/python benchmarks/throughput.py ../shared/bench/scifact [--limit-docs 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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
from llmops_dagster.documents.rows import Document
from llmops_dagster.embed.cache import embed_missing
from llmops_dagster.embed.model import Embedder, load_embedder, load_tokenizer
from llmops_dagster.hashing import content_hash
from llmops_dagster.search.aliases import alias_indices, list_versions
from llmops_dagster.search.client import check_cluster, make_client
from llmops_dagster.search.retriever import HybridRetriever, SearchMode
from llmops_dagster.search.sync import sync_index
from llmops_dagster.stats import percentile
from llmops_dagster.text.chunking import chunk_document
from llmops_dagster.warehouse import connect

log = logging.getLogger("throughput")

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "bench" / "scifact"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "throughput.json"
TARGETS = {
    "p2_ratio": (">=", 0.85),
    "p3_ratio": (">=", 2.0),
    "p3_ndcg_delta": ("abs<=", 0.005),
    "p4_ratio": ("<=", 0.10),
    "p5_ratio": ("<=", 1.5),
    "p8_ratio": ("<=", 1.5),
}


# --- corpus → document rows ----------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def scifact_documents(corpus: list[dict[str, Any]], *, revised: set[str] = frozenset()) -> list:
    """``Document`` rows (CONTRACTS.md) for SciFact abstracts; ``revised`` ids get new text."""
    now = dt.datetime.now(dt.UTC)
    docs = []
    for row in corpus:
        text = row["text"].strip()
        if row["_id"] in revised:
            text += " Revised: this abstract was corrected after publication."
        docs.append(
            Document(
                doc_id=f"scifact:{row['_id']}",
                source="scifact",
                natural_key=str(row["_id"]),
                title=row.get("title", "").strip(),
                text=text,
                uri=f"beir://scifact/{row['_id']}",
                format="txt",
                updated_at=now,
                content_hash=content_hash(text),
            )
        )
    return docs


class Pipeline:
    """The four library calls the assets make, with the settings the assets pass."""

    def __init__(self, settings: Settings, embedder: Embedder, client: Any, alias: str) -> None:
        self.settings = settings
        self.embedder = embedder
        self.client = client
        self.alias = alias
        tokenizer = load_tokenizer(settings.models.embedding_model)
        size, overlap = settings.corpus.chunk_size_tokens, settings.corpus.chunk_overlap_tokens
        self.fingerprint = hashlib.sha256(
            f"{settings.models.embedding_model}|{size}|{overlap}".encode()
        ).hexdigest()[:16]

        def chunker(doc_id: str, text: str, fmt: str) -> list:
            return chunk_document(
                doc_id, text, tokenizer=tokenizer, chunk_size=size, overlap=overlap, fmt=fmt
            )

        self.chunker: Callable[[str, str, str], list] = chunker

    def run(self, docs: list[Document], *, mode: str = "incremental") -> dict[str, Any]:
        """One pass documents → chunks → embeddings → index; stage times in seconds."""
        t: dict[str, Any] = {}
        started = time.perf_counter()
        with connect(self.settings.duckdb_path) as con:
            mark = time.perf_counter()
            sync_documents(con, NormalizedBatch(documents=docs))
            t["documents_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
            documents = read_documents(con).select(["doc_id", "content_hash", "text", "format"])
            chunk_report = sync_chunks(con, documents, self.chunker, fingerprint=self.fingerprint)
            t["chunks_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
            table = active_chunks(con).select(["content_hash", "text"])
            items = list(
                zip(
                    table.column("content_hash").to_pylist(),
                    table.column("text").to_pylist(),
                    strict=True,
                )
            )
            stats = embed_missing(
                con, self.embedder, items, batch_size=self.settings.models.embed_batch_size
            )
            t["embed_s"] = time.perf_counter() - mark
            t["embed_model_s"] = stats.seconds
            mark = time.perf_counter()
            index_report = sync_index(
                self.client,
                con,
                alias=self.alias,
                model_id=self.embedder.model_id,
                dims=self.embedder.dims,
                mode=mode,  # type: ignore[arg-type]
                keep=0,
                shards=self.settings.elasticsearch.shards,
                replicas=self.settings.elasticsearch.replicas,
                hnsw_m=self.settings.elasticsearch.hnsw_m,
                ef_construction=self.settings.elasticsearch.hnsw_ef_construction,
            )
            t["index_s"] = time.perf_counter() - mark
            # Where the index stage goes: the bulk load vs the rest (create, refresh, verify,
            # alias swap); the embedding stage's own overhead is embed_s - embed_model_s.
            t["index_load_s"] = index_report.load_seconds
            t["index_other_s"] = t["index_s"] - index_report.load_seconds
        t["total_s"] = time.perf_counter() - started
        t["chunks_added"] = chunk_report.chunks_added
        t["chunks_removed"] = chunk_report.chunks_removed
        t["active_chunks"] = chunk_report.active_chunks
        t["embedded"] = stats.embedded
        t["cached"] = stats.cached
        t["indexed"] = index_report.indexed
        t["deleted"] = index_report.deleted
        t["index_mode"] = index_report.mode
        return t


def distinct_chunk_texts(pipeline: Pipeline, docs: list[Document]) -> list[str]:
    """The texts the pipeline will embed: distinct chunk texts, in the order it sees them."""
    seen: dict[str, str] = {}
    for doc in sorted(docs, key=lambda d: d.doc_id):
        for chunk in pipeline.chunker(doc.doc_id, doc.text, doc.format):
            seen.setdefault(chunk.content_hash, chunk.text)
    return list(seen.values())


def timed_encode(embedder: Embedder, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    embedder.encode(texts, batch_size=batch_size)
    return time.perf_counter() - started


def interleaved_throughput(
    a: Embedder, b: Embedder, texts: list[str], batch_size: int, slice_size: int
) -> tuple[float, float]:
    """Seconds for ``a`` and ``b`` over the same texts, slices alternated ABBA (drift-fair)."""
    seconds = {"a": 0.0, "b": 0.0}
    for i, start in enumerate(range(0, len(texts), slice_size)):
        part = texts[start : start + slice_size]
        order = (("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a))
        for name, embedder in order:
            seconds[name] += timed_encode(embedder, part, batch_size)
    return seconds["a"], seconds["b"]


def where_the_time_goes(
    fp32: Embedder,
    texts: list[str],
    split: dict[str, float] | None,
    before: dict[str, float],
    fast_s: float,
) -> dict[str, Any]:
    """The int8 path's seconds split into tokenization and forward pass (from its counters
    during the interleaved run), and the fp32 path's tokenization of the same texts alone."""
    out: dict[str, Any] = {}
    if split is not None:
        tokenize = split["tokenize"] - before.get("tokenize", 0.0)
        forward = split["forward"] - before.get("forward", 0.0)
        out["onnx_int8"] = {
            "tokenize_s": round(tokenize, 3),
            "forward_s": round(forward, 3),
            "tokenize_share": round(tokenize / fast_s, 3),
            "forward_share": round(forward / fast_s, 3),
        }
    tokenize = getattr(fp32.model, "tokenize", None)
    if tokenize is not None:  # SentenceTransformer: its tokenizer call, as encode makes it
        started = time.perf_counter()
        for start in range(0, len(texts), 64):
            tokenize(texts[start : start + 64])
        out["fp32_tokenize_s"] = round(time.perf_counter() - started, 3)
    return out


# --- p5 -------------------------------------------------------------------------------------------
def query_latency(
    retriever: HybridRetriever, queries: list[str], modes: list[SearchMode]
) -> dict[str, float]:
    """p50/p95 ms per mode, one ``search(k=10)`` per query, mode order rotated per query."""
    for text in queries[:10]:
        for mode in modes:
            retriever.search(text, mode=mode, k=10)
    times: dict[str, list[float]] = {m.value: [] for m in modes}
    for i, text in enumerate(queries):
        for mode in modes[i % len(modes) :] + modes[: i % len(modes)]:
            started = time.perf_counter()
            retriever.search(text, mode=mode, k=10)
            times[mode.value].append((time.perf_counter() - started) * 1000)
    out: dict[str, float] = {}
    for mode, values in times.items():
        out[f"{mode}_p50_ms"] = round(percentile(values, 50), 2)
        out[f"{mode}_p95_ms"] = round(percentile(values, 95), 2)
    return out


class FixedQueryEncoder:
    """Serves pre-computed query vectors: isolates the Elasticsearch round trip + fusion."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.lookup = dict(zip(texts, vectors, strict=True))

    def encode(self, texts: Any) -> np.ndarray:
        return np.stack([self.lookup[t] for t in texts])


# --- p3 nDCG -------------------------------------------------------------------------------------
def hybrid_ndcg(
    client: Any,
    embedder: Embedder,
    corpus: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    qrels: dict[str, dict[str, int]],
    alias: str,
) -> tuple[dict[str, Any], np.ndarray]:
    """Hybrid-RRF quality with ``embedder``, indexed and scored as ``retrieval_scifact`` does;
    also the document vectors (for the int8-vs-fp32 cosine distribution)."""
    import retrieval_scifact as rs

    from llmops_dagster.search.aliases import rebuild
    from llmops_dagster.search.mapping import IndexSpec, build_index_body

    chunks = rs.corpus_chunks(corpus, 0)
    texts = [f"{c['title']} {c['text']}".strip() for c in chunks]
    vectors = rs.embed_cached(embedder, texts, "scifact-docs")
    query_vectors = rs.embed_cached(embedder, [q["text"] for q in queries], "scifact-queries")
    body = build_index_body(
        IndexSpec(dims=embedder.dims, model_id=embedder.model_id), client=client
    )
    rebuild(
        client,
        alias,
        rs.with_vectors(chunks, vectors, embedder.model_id),
        len(chunks),
        body,
        smoke_query_vector=vectors[0],
        keep=0,
        bulk_options={"chunk_size": 500},
    )
    client.indices.forcemerge(index=alias, max_num_segments=1, wait_for_completion=True)
    encoder = FixedQueryEncoder([q["text"] for q in queries], query_vectors)
    retriever = HybridRetriever(client, alias, encoder)
    row = rs.run_mode(retriever, SearchMode.HYBRID_RRF.value, queries, qrels)
    knn = rs.run_mode(retriever, SearchMode.KNN.value, queries, qrels)
    exact = rs.exact_dense_reference(vectors, query_vectors, chunks, queries, qrels)
    quality = {"hybrid_rrf": row, "knn": knn, "exact_dense": exact, "documents": len(corpus)}
    return quality, vectors


def cosine_distribution(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """min / p1 / p5 / mean of the row-wise cosine of two sets of L2-normalised vectors."""
    cosine = (a.astype(np.float64) * b.astype(np.float64)).sum(axis=1)
    return {
        "vectors": int(cosine.size),
        "min": round(float(cosine.min()), 4),
        "p1": round(percentile(cosine.tolist(), 1), 4),
        "p5": round(percentile(cosine.tolist(), 5), 4),
        "mean": round(float(cosine.mean()), 5),
        "below_0_99": int((cosine < 0.99).sum()),
    }


# --- p8 -------------------------------------------------------------------------------------------
def import_seconds(module: str) -> float:
    code = (
        "import time, sys; t = time.perf_counter(); import " + module + "; "
        "print(time.perf_counter() - t)"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env=env,
    )
    return float(out.stdout.strip().splitlines()[-1])


def import_ratio(repeats: int) -> dict[str, float]:
    """Best-of-N import times in fresh interpreters (page cache warm after the first)."""
    import_seconds("llmops_dagster.definitions")  # warm the file cache / bytecode
    base, ours = [], []
    for _ in range(repeats):
        base.append(import_seconds("dagster"))
        ours.append(import_seconds("llmops_dagster.definitions"))
    return {
        "import_dagster_s": round(min(base), 3),
        "import_definitions_s": round(min(ours), 3),
        "p8_ratio": round(min(ours) / min(base), 3),
    }


# --- main -----------------------------------------------------------------------------------------
def check(name: str, value: float) -> str:
    op, target = TARGETS[name]
    ok = (
        abs(value) <= target
        if op == "abs<="
        else value >= target
        if op == ">="
        else value <= target
    )
    return "ok" if ok else "MISS"


def drop_alias(client: Any, alias: str) -> None:
    for name in set(list_versions(client, alias)) | set(alias_indices(client, alias)):
        client.indices.delete(index=name, ignore_unavailable=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit-docs", type=int, default=1000, help="0 = the whole corpus")
    parser.add_argument("--backend", default="onnx-int8", help="backend of the p2/p4/p5 runs")
    parser.add_argument("--p3-texts", type=int, default=512, help="chunk texts for p3 speed")
    parser.add_argument("--ndcg-docs", type=int, default=0, help="0 = whole corpus (default)")
    parser.add_argument("--queries", type=int, default=200, help="queries for p5 latency")
    parser.add_argument("--import-repeats", type=int, default=5)
    parser.add_argument("--skip", default="", help="comma list of p3ndcg,p5,p8 to skip")
    parser.add_argument("--es-url", default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    skip = set(filter(None, args.skip.split(",")))

    import tempfile

    work = Path(tempfile.mkdtemp(prefix="llmops-throughput-"))
    settings = Settings()
    # A throw-away warehouse: never the project's own (LLMOPS_HOME) DuckDB file.
    update: dict[str, Any] = {"warehouse": {"duckdb_path": work / "warehouse.duckdb", "url": None}}
    if args.es_url:
        update["elasticsearch"] = {"url": args.es_url.rstrip("/")}
    settings = settings.override(**update)
    assert settings.duckdb_path == work / "warehouse.duckdb", settings.duckdb_path
    client = make_client(settings.cluster_spec(), request_timeout=120)
    health = check_cluster(client, settings.cluster_spec())

    corpus_all = read_jsonl(args.data / "corpus.jsonl")
    corpus = corpus_all[: args.limit_docs] if args.limit_docs else corpus_all
    batch = settings.models.embed_batch_size
    log.info("loading embedders (torch fp32 and onnx-int8; conversion is cached)")
    fp32 = load_embedder(settings.models.embedding_model, backend="torch")
    fast = load_embedder(
        settings.models.embedding_model, backend="onnx-int8", cache_dir=settings.models_cache_dir
    )
    embedder = fast if args.backend == "onnx-int8" else fp32
    alias = "bench-throughput"
    drop_alias(client, alias)
    pipeline = Pipeline(settings, embedder, client, alias)
    docs = scifact_documents(corpus)
    texts = distinct_chunk_texts(pipeline, docs)
    timed_encode(embedder, texts[:batch], batch)  # warm-up: first-run allocations
    log.info("%d documents → %d distinct chunk texts", len(docs), len(texts))

    # p2: ceiling before, the pipeline, ceiling after.
    ceiling_a = timed_encode(embedder, texts, batch)
    full = pipeline.run(docs)
    ceiling_b = timed_encode(embedder, texts, batch)
    ceiling = (ceiling_a + ceiling_b) / 2
    assert full["embedded"] == len(texts), (full["embedded"], len(texts))
    p2 = ceiling / full["total_s"]
    log.info("p2: ceiling %.1f/%.1f s, pipeline %.1f s", ceiling_a, ceiling_b, full["total_s"])

    # p4: 1 % of the documents change.
    step = 100
    revised = {row["_id"] for row in corpus[::step]}
    with connect(settings.duckdb_path) as con:
        before = {r[0] for r in con.execute("SELECT DISTINCT content_hash FROM llmops.chunks "
                                            "WHERE status = 'active'").fetchall()}  # fmt: skip
        cached_before = {r[0] for r in con.execute(
            "SELECT content_hash FROM llmops.embedding_cache WHERE model_id = ?",
            [embedder.model_id]).fetchall()}  # fmt: skip
    incremental = pipeline.run(scifact_documents(corpus, revised=revised))
    with connect(settings.duckdb_path) as con:
        after = {r[0] for r in con.execute("SELECT DISTINCT content_hash FROM llmops.chunks "
                                           "WHERE status = 'active'").fetchall()}  # fmt: skip
    expected_new = after - cached_before
    assert incremental["embedded"] == len(expected_new), (incremental, len(expected_new))
    assert incremental["index_mode"] == "incremental", incremental
    assert incremental["indexed"] == incremental["chunks_added"], incremental
    p4 = incremental["total_s"] / full["total_s"]
    log.info("p4: %d docs revised, %d texts embedded", len(revised), incremental["embedded"])
    del before

    # p3 speed: same chunk texts, fp32 vs onnx-int8, interleaved.
    rng = np.random.default_rng(8)
    sample = [texts[i] for i in sorted(rng.permutation(len(texts))[: args.p3_texts])]
    timed_encode(fp32, sample[:batch], batch)
    split = getattr(fast.model, "seconds", None)  # OnnxSentenceEncoder: tokenize vs forward
    split_before = dict(split) if split is not None else {}
    fp32_s, fast_s = interleaved_throughput(fp32, fast, sample, batch, slice_size=2 * batch)
    p3 = fp32_s / fast_s
    log.info("p3: fp32 %.1f s, onnx-int8 %.1f s on %d texts", fp32_s, fast_s, len(sample))
    time_split = where_the_time_goes(fp32, sample, split, split_before, fast_s)

    queries_all = read_jsonl(args.data / "queries.jsonl")
    result: dict[str, Any] = {}

    # p5: hybrid vs kNN on the pipeline's index.
    if "p5" not in skip:
        query_texts = [q["text"] for q in queries_all[: args.queries]]
        live = HybridRetriever(client, alias, embedder)
        lat = query_latency(live, query_texts, [SearchMode.KNN, SearchMode.HYBRID_RRF])
        vectors = embedder.encode(query_texts, batch_size=batch)
        fixed = HybridRetriever(client, alias, FixedQueryEncoder(query_texts, vectors))
        es_lat = query_latency(fixed, query_texts, [SearchMode.KNN, SearchMode.HYBRID_RRF])
        result["p5_ratio"] = round(lat["hybrid_rrf_p95_ms"] / lat["knn_p95_ms"], 3)
        result["p5"] = {
            **lat,
            **{f"es_only_{k}": v for k, v in es_lat.items()},
            "es_only_ratio": round(es_lat["hybrid_rrf_p95_ms"] / es_lat["knn_p95_ms"], 3),
            "queries": len(query_texts),
        }

    # p3 quality: hybrid nDCG@10 on SciFact, fp32 vs onnx-int8.
    if "p3ndcg" not in skip:
        import retrieval_scifact as rs

        qrels = rs.read_qrels(args.data / "qrels.tsv")
        queries = [q for q in queries_all if q["_id"] in qrels]
        ndcg_corpus = corpus_all[: args.ndcg_docs] if args.ndcg_docs else corpus_all
        quality, doc_vectors = {}, {}
        for name, e in (("fp32", fp32), ("onnx_int8", fast)):
            quality[name], doc_vectors[name] = hybrid_ndcg(
                client, e, ndcg_corpus, queries, qrels, f"bench-ndcg-{name}"
            )
            drop_alias(client, f"bench-ndcg-{name}")
        result["p3_ndcg_delta"] = round(
            quality["onnx_int8"]["hybrid_rrf"]["ndcg@10"]
            - quality["fp32"]["hybrid_rrf"]["ndcg@10"],
            4,
        )
        result["p3_quality"] = quality
        result["p3_cosine"] = cosine_distribution(doc_vectors["onnx_int8"], doc_vectors["fp32"])

    if "p8" not in skip:
        result.update(import_ratio(args.import_repeats))

    drop_alias(client, alias)
    result = {
        "p2_ratio": round(p2, 3),
        "p3_ratio": round(p3, 3),
        **result,
        "p4_ratio": round(p4, 4),
        "docs": len(docs),
        "chunk_texts": len(texts),
        "p2": {
            "backend": embedder.backend,
            "ceiling_s": [round(ceiling_a, 2), round(ceiling_b, 2)],
            "pipeline": {k: round(v, 3) if isinstance(v, float) else v for k, v in full.items()},
            "pipeline_texts_per_s": round(len(texts) / full["total_s"], 1),
            "ceiling_texts_per_s": round(len(texts) / ceiling, 1),
        },
        "p3": {
            "texts": len(sample),
            "fp32_s": round(fp32_s, 2),
            "onnx_int8_s": round(fast_s, 2),
            "fp32_texts_per_s": round(len(sample) / fp32_s, 1),
            "onnx_int8_texts_per_s": round(len(sample) / fast_s, 1),
            "where_the_time_goes": time_split,
            "onnx_recipe": getattr(fast.model, "meta", {}).get("quantization"),
            "onnx_threads": getattr(fast.model, "threads", None),
        },
        "p4": {
            "revised_docs": len(revised),
            "incremental": {
                k: round(v, 3) if isinstance(v, float) else v for k, v in incremental.items()
            },
            "embedded_exactly_new_texts": True,
        },
        "setup": {
            # relative to the checkout: a results file names no path of one machine
            "corpus": os.path.relpath(args.data.resolve(), REPO_ROOT),
            "limit_docs": args.limit_docs,
            "batch_size": batch,
            "chunk_size_tokens": settings.corpus.chunk_size_tokens,
            "models": {"fp32": fp32.model_id, "fast": fast.model_id},
            "elasticsearch": health.version,
            "cpus": os.cpu_count(),
            "note": "ratios of measurements taken side by side in this run; absolute seconds "
            "on a shared 2-core machine are noise",
        },
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
    }
    result["verdict"] = {k: check(k, result[k]) for k in TARGETS if k in result}
    print_table(result)
    headline = {k: result[k] for k in TARGETS if k in result}
    if "p5" in result:
        headline["p5_es_only_ratio"] = result["p5"]["es_only_ratio"]
    if "p3_cosine" in result:
        headline["p3_cosine_min"] = result["p3_cosine"]["min"]
        headline["p3_cosine_mean"] = result["p3_cosine"]["mean"]
    write_results(args.output, result, headline)
    log.info("wrote %s", args.output)
    return 0


def print_table(result: dict[str, Any]) -> None:
    header = f"{'figure':<16}{'value':>10}  {'target':<12}{'':>6}"
    print(header)
    print("-" * len(header))
    for name, (op, target) in TARGETS.items():
        if name not in result:
            continue
        value = result[name]
        print(f"{name:<16}{value:>10.4f}  {op + ' ' + str(target):<12}{result['verdict'][name]:>6}")
    if "p5" in result:
        print(f"p5 Elasticsearch-only (hybrid p95 / kNN p95): {result['p5']['es_only_ratio']}")
    if "p3_cosine" in result:
        c = result["p3_cosine"]
        print(
            f"p3 cosine int8 vs fp32 over {c['vectors']} SciFact documents: min {c['min']}, "
            f"p1 {c['p1']}, mean {c['mean']}"
        )
    split = result["p3"]["where_the_time_goes"].get("onnx_int8")
    if split:
        print(
            f"p3 int8 time: tokenization {split['tokenize_share']:.0%}, "
            f"forward pass {split['forward_share']:.0%}"
        )
    print(f"documents: {result['docs']}, distinct chunk texts: {result['chunk_texts']}")


if __name__ == "__main__":
    raise SystemExit(main())
