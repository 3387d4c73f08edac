"""Retrieval benchmark on BEIR SciFact: every search mode, through the project's own code.

Indexes the corpus with the project's mapping, bulk writer and versioned-alias rebuild, runs the
300 test claims in each mode of :class:`~llmops_dagster.search.retriever.SearchMode`, and scores
the runs at DOCUMENT level (a document's rank is that of its best chunk) with ``ir-measures``
(trec_eval underneath; ``ir_eval.py``): nDCG@10, Recall@100, MRR@10. Latency is one ``search``
call per query at k=10, as a RAG request would make it: query embedding + the msearch round
trip(s) + fusion.

BM25 stemming rows: the same claims by BM25 over (a) the plain fields (no stemming: the node's
core analyzer), (b) the Python-stemmed shadow fields, (c) both, and (d) the node's ``english``
analyzer when the node has it (else the row says it is not available). Hybrid latency is
measured for the ids-only path (the default) and the older inline path (``_source`` on every
candidate) in the same interleaved loop, and reported as ratios to kNN (``p5``: hybrid p95 ÷
kNN p95, end to end and Elasticsearch-only).

The fusion defaults measured here were chosen on a dev split by ``benchmarks/fusion_dev.py``,
never on these test claims; ``--sweep`` adds a test-set sweep for information only.

Why a benchmark in the repo: fusion parameters are config, and config changes must be measured.
Document embeddings (``title + " " + text``, as MTEB embeds SciFact) are cached under
``.llmops/bench-cache/`` because embedding 5,183 abstracts on two CPU cores takes minutes.

Usage::

    ELASTICSEARCH_URL=http://127.0.0.1:9266 .venv/bin/python benchmarks/retrieval_scifact.py \
        [DATA_DIR] [--limit-docs N] [--sweep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from llmops_dagster.config import Settings, apply_offline_env_defaults

apply_offline_env_defaults()  # this script is where the process starts
from ir_eval import doc_level_run, evaluate
from results_file import write_results

from llmops_dagster.embed.model import Embedder, load_embedder
from llmops_dagster.hashing import content_hash
from llmops_dagster.search.aliases import (
    alias_indices,
    list_versions,
    rebuild,
)
from llmops_dagster.search.client import check_cluster, make_client
from llmops_dagster.search.mapping import (
    CORE_ENGLISH_ANALYZER,
    IndexSpec,
    VectorIndexOptions,
    analyzer_exists,
    build_index_body,
)
from llmops_dagster.search.retriever import (
    HybridRetriever,
    RetrieverConfig,
    SearchMode,
)
from llmops_dagster.stats import percentile
from llmops_dagster.text.chunking import chunk_document, make_chunk_id

log = logging.getLogger("retrieval_scifact")

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "bench" / "scifact"
CACHE_DIR = REPO_ROOT / ".llmops" / "bench-cache"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "retrieval_scifact.json"
MODES = [m.value for m in SearchMode]


# --- data ----------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        next(handle)  # header: query-id corpus-id score
        for line in handle:
            qid, doc_id, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[doc_id] = int(score)
    return qrels


def embed_cached(embedder: Embedder, texts: list[str], name: str) -> np.ndarray:
    """Embeddings from ``.llmops/bench-cache/<name>-<digest>.npy``, computed on a miss.

    The digest covers the model and every text, so a changed corpus or model never reuses
    stale vectors.
    """
    digest = hashlib.sha256()
    digest.update(embedder.model_id.encode())  # canonical id: name@weights-hash
    digest.update(b"\x1e")
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x1f")
    path = CACHE_DIR / f"{name}-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape == (len(texts), embedder.dims):
            return vectors
    log.info("embedding %d texts for %s (cached afterwards in %s)", len(texts), name, path)
    started = time.perf_counter()
    vectors = embedder.encode(texts, batch_size=32)
    log.info("embedded in %.1f s", time.perf_counter() - started)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def split_text(text: str, max_words: int) -> list[str]:
    """Sentence-packing split into pieces of at most ~``max_words`` words (0 = no split).

    A stand-in for the project's chunker when ``llmops_dagster.text.chunking`` is not there:
    the embedding model reads only its first 256 word pieces, so long abstracts lose their
    end unless split.
    """
    if max_words <= 0 or len(text.split()) <= max_words:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in _SENTENCE_END.split(text):
        words = len(sentence.split())
        if current and count + words > max_words:
            pieces.append(" ".join(current))
            current, count = [], 0
        current.append(sentence)
        count += words
    if current:
        pieces.append(" ".join(current))
    return pieces


def _chunk_row(row: dict[str, Any], position: int, text: str) -> dict[str, Any]:
    """One chunk row per docs/CONTRACTS.md (ids and hashes as ``chunk_document`` makes them)."""
    doc_id = f"scifact:{row['_id']}"
    return {
        "chunk_id": make_chunk_id(doc_id, position, text),
        "doc_id": doc_id,
        "source": "scifact",
        "title": row.get("title", ""),
        "uri": f"beir://scifact/{row['_id']}",
        "position": position,
        "section": "",
        "text": text,
        "content_hash": content_hash(text),
    }


def corpus_chunks(corpus: list[dict[str, Any]], max_words: int) -> list[dict[str, Any]]:
    """Chunk rows (without vectors) per docs/CONTRACTS.md, ``_id`` = chunk_id."""
    return [
        _chunk_row(row, position, text)
        for row in corpus
        for position, text in enumerate(split_text(row["text"], max_words))
    ]


def product_chunks(
    corpus: list[dict[str, Any]], tokenizer: Any, chunk_size: int, overlap: int
) -> list[dict[str, Any]]:
    """Chunk rows as the pipeline cuts documents: ``chunk_document`` at ``chunk_size`` tokens
    with ``overlap`` (plain text), so a long abstract is read whole over several chunks, the
    way the product indexes it, instead of being cut at the model's window."""
    return [
        _chunk_row(row, chunk.position, chunk.text)
        for row in corpus
        for chunk in chunk_document(
            row["_id"],
            row["text"],
            tokenizer=tokenizer,
            chunk_size=chunk_size,
            overlap=overlap,
            fmt="txt",
        )
    ]


def with_vectors(
    chunks: list[dict[str, Any]], vectors: np.ndarray, model_id: str
) -> Iterator[dict[str, Any]]:
    for chunk, vector in zip(chunks, vectors, strict=True):
        yield {**chunk, "model_id": model_id, "embedding": vector}


# --- evaluation ----------------------------------------------------------------------------------
def run_mode(
    retriever: HybridRetriever,
    mode: str,
    queries: list[dict[str, Any]],
    qrels: dict[str, dict[str, int]],
    chunk_k: int = 100,
    **params: Any,
) -> dict[str, Any]:
    """Quality of one mode: top ``chunk_k`` chunks per query via batched ``search_many``."""
    texts = [q["text"] for q in queries]
    results = retriever.search_many(texts, mode=mode, k=chunk_k, **params)
    effective = retriever.last_effective_mode
    run = doc_level_run({q["_id"]: hits for q, hits in zip(queries, results, strict=True)})
    row: dict[str, Any] = evaluate(run, qrels)
    if effective is not None and effective.value != mode:
        row["effective_mode"] = effective.value
        row["note"] = retriever.server_rrf_fallback_reason
    return row


LatencyVariant = tuple[HybridRetriever, HybridRetriever, str]


def measure_latency(
    variants: dict[str, LatencyVariant], texts: list[str]
) -> dict[str, dict[str, float]]:
    """Per-variant latency of single ``search(k=10)`` calls, variants interleaved per query.

    A variant is (live retriever, cached-vector retriever, mode). Interleaving (rotated per
    query) spreads background noise (other processes on a small shared machine) over all
    variants equally. ``e2e`` encodes the query live, as a RAG request does; ``es`` uses a
    pre-computed query vector, isolating the Elasticsearch round trip(s) and the fusion.
    """
    names = list(variants)
    timings: dict[str, dict[str, list[float]]] = {n: {"e2e": [], "es": []} for n in names}
    for text in texts[:10]:  # warm-up
        for live, cached, mode in variants.values():
            live.search(text, mode=mode, k=10)
            cached.search(text, mode=mode, k=10)
    for i, text in enumerate(texts):
        rotated = names[i % len(names) :] + names[: i % len(names)]
        for name in rotated:
            live, cached, mode = variants[name]
            for kind, retriever in (("e2e", live), ("es", cached)):
                started = time.perf_counter()
                retriever.search(text, mode=mode, k=10)
                timings[name][kind].append((time.perf_counter() - started) * 1000)
    out: dict[str, dict[str, float]] = {}
    for name, kinds in timings.items():
        out[name] = {
            "p50_ms": round(percentile(kinds["e2e"], 50), 2),
            "p95_ms": round(percentile(kinds["e2e"], 95), 2),
            "es_p50_ms": round(percentile(kinds["es"], 50), 2),
            "es_p95_ms": round(percentile(kinds["es"], 95), 2),
        }
    return out


def latency_ratios(latency: dict[str, dict[str, float]]) -> dict[str, float]:
    """Hybrid p95 ÷ kNN p95 (throughput.py's p5), end to end and Elasticsearch-only."""
    knn = latency["knn"]
    ratios: dict[str, float] = {}
    for name, row in latency.items():
        if name.startswith("hybrid"):
            ratios[f"p5_{name}"] = round(row["p95_ms"] / knn["p95_ms"], 3)
            ratios[f"p5_es_{name}"] = round(row["es_p95_ms"] / knn["es_p95_ms"], 3)
    return ratios


def exact_dense_reference(
    chunk_vectors: np.ndarray,
    query_vectors: np.ndarray,
    chunks: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    qrels: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """Brute-force cosine over float32 vectors (what int8_hnsw approximates), doc level."""

    class _Hit:
        def __init__(self, doc_id: str) -> None:
            self.doc_id = doc_id

    scores = query_vectors @ chunk_vectors.T
    top = np.argsort(-scores, axis=1)[:, :300]
    hits = {q["_id"]: [_Hit(chunks[j]["doc_id"]) for j in top[i]] for i, q in enumerate(queries)}
    return evaluate(doc_level_run(hits), qrels)


# --- main ----------------------------------------------------------------------------------------
class CachedQueryEncoder:
    """Serves pre-computed query vectors (quality runs, and Elasticsearch-only latency)."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.lookup = {text: vectors[i] for i, text in enumerate(texts)}

    def encode(self, texts: Any) -> np.ndarray:
        return np.stack([self.lookup[t] for t in texts])


def build_text_index(
    client: Any, alias: str, chunks: list[dict[str, Any]], spec: IndexSpec, benchmark: str
) -> tuple[str, dict[str, Any]]:
    """A BM25-only copy of the corpus (no vectors) under ``alias``; returns (index, _meta)."""
    body = build_index_body(spec, client=client, meta={"benchmark": benchmark})
    report = rebuild(client, alias, iter(chunks), len(chunks), body, keep=0)
    client.indices.forcemerge(index=report.index, max_num_segments=1, wait_for_completion=True)
    return report.index, body["mappings"]["_meta"]


def stemming_rows(
    client: Any,
    alias: str,
    chunks: list[dict[str, Any]],
    dims: int,
    model_id: str,
    queries: list[dict[str, Any]],
    qrels: dict[str, dict[str, int]],
    chunk_k: int,
) -> dict[str, Any]:
    """BM25 without stemming, with Python stemming, both, and with ``english`` (if present).

    The first three share one index (core analyzer + Python shadow fields), so they differ
    only in the fields and the query; ``english`` needs its own index.
    """
    rows: dict[str, Any] = {}
    core = IndexSpec(
        dims=dims, model_id=model_id, analyzer=CORE_ENGLISH_ANALYZER, stemming="python"
    )
    build_text_index(client, f"{alias}-bm25-core", chunks, core, "bm25 stemming rows")
    fields = {
        "none": ("title", "text"),
        "python": ("title_stemmed", "text_stemmed"),
        "python+plain": ("title", "text", "title_stemmed", "text_stemmed"),
    }
    for name, bm25_fields in fields.items():
        retriever = HybridRetriever(
            client, f"{alias}-bm25-core", config=RetrieverConfig(bm25_fields=bm25_fields)
        )
        rows[name] = {
            "analyzer": CORE_ENGLISH_ANALYZER,
            "fields": list(bm25_fields),
            **run_mode(retriever, "bm25", queries, qrels, chunk_k=chunk_k),
        }
    if analyzer_exists(client, "english"):
        english = IndexSpec(dims=dims, model_id=model_id, analyzer="english")
        build_text_index(client, f"{alias}-bm25-english", chunks, english, "bm25 english row")
        retriever = HybridRetriever(client, f"{alias}-bm25-english")
        rows["english"] = {
            "analyzer": "english",
            "fields": list(retriever.bm25_fields()),
            **run_mode(retriever, "bm25", queries, qrels, chunk_k=chunk_k),
        }
    else:
        rows["english"] = {"available": False, "note": "not available on this node"}
    return rows


def test_sweep(
    retriever: HybridRetriever,
    queries: list[dict[str, Any]],
    qrels: dict[str, dict[str, int]],
    chunk_k: int,
) -> list[dict[str, Any]]:
    """Fusion parameters on the TEST claims: for information only (defaults: fusion_dev.py)."""
    sweep: list[dict[str, Any]] = []
    for window in (100, 200):
        for rank_constant in (10, 20, 60):
            row = run_mode(
                retriever, "hybrid_rrf", queries, qrels, chunk_k=chunk_k,
                window=window, rank_constant=rank_constant,
            )  # fmt: skip
            sweep.append(
                {"mode": "hybrid_rrf", "window": window, "rank_constant": rank_constant, **row}
            )
    for weights in [(0.3, 0.7), (0.5, 0.5), (0.7, 0.3)]:
        for normalization in ("minmax", "l2"):
            row = run_mode(
                retriever, "hybrid_linear", queries, qrels, chunk_k=chunk_k,
                weights=weights, normalization=normalization,
            )  # fmt: skip
            sweep.append(
                {"mode": "hybrid_linear", "weights": list(weights),
                 "normalization": normalization, **row}
            )  # fmt: skip
    return sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit-docs", type=int, default=None)
    parser.add_argument("--es-url", default=None, help="default: ELASTICSEARCH_URL / settings")
    parser.add_argument("--alias", default="bench-scifact")
    parser.add_argument("--window", type=int, default=None, help="RRF/linear window")
    parser.add_argument("--num-candidates", type=int, default=None)
    parser.add_argument("--rank-constant", type=int, default=None)
    parser.add_argument("--analyzer", default=None, help="default: best the node offers")
    parser.add_argument("--vector-type", default=VectorIndexOptions().type)
    parser.add_argument(
        "--chunk-words", type=int, default=0, help="split abstracts into ~N-word chunks (0: no)"
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--no-stemming-rows", action="store_true", help="skip the BM25 rows")
    parser.add_argument("--sweep", action="store_true", help="also sweep fusion on the test set")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--drop-index", action="store_true", help="delete the indices afterwards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    load_at_start = os.getloadavg()[0]

    settings = Settings()
    if args.es_url:
        settings = settings.override(elasticsearch={"url": args.es_url.rstrip("/")})
    client = make_client(settings.cluster_spec(), request_timeout=120)
    health = check_cluster(client, settings.cluster_spec())
    data: Path = args.data
    corpus = read_jsonl(data / "corpus.jsonl")
    queries = read_jsonl(data / "queries.jsonl")
    qrels = read_qrels(data / "qrels.tsv")
    if args.limit_docs:
        # Keep every judged document so that the metrics stay meaningful on a subset.
        judged = {d for rels in qrels.values() for d in rels}
        kept = [row for row in corpus if row["_id"] in judged]
        rest = [row for row in corpus if row["_id"] not in judged]
        corpus = (kept + rest)[: max(args.limit_docs, len(kept))]
    queries = [q for q in queries if q["_id"] in qrels]

    embedder = load_embedder(
        settings.models.embedding_model,
        backend=settings.models.embedding_backend,
        cache_dir=settings.models_cache_dir,
    )
    chunks = corpus_chunks(corpus, args.chunk_words)
    chunk_texts = [f"{c['title']} {c['text']}".strip() for c in chunks]
    cache_name = "scifact-docs" if args.chunk_words <= 0 else "scifact-chunks"
    chunk_vectors = embed_cached(embedder, chunk_texts, cache_name)
    query_texts = [q["text"] for q in queries]
    query_vectors = embed_cached(embedder, query_texts, "scifact-queries")

    spec = IndexSpec(
        dims=embedder.dims,
        model_id=embedder.model_id,
        analyzer=args.analyzer,
        vector_options=VectorIndexOptions(type=args.vector_type),
    )
    body = build_index_body(spec, client=client, meta={"benchmark": "beir-scifact-test"})
    index_meta = body["mappings"]["_meta"]
    started = time.perf_counter()
    report = rebuild(
        client,
        args.alias,
        with_vectors(chunks, chunk_vectors, embedder.model_id),
        len(chunks),
        body,
        smoke_query_vector=chunk_vectors[0],
        keep=0,
        bulk_options={"chunk_size": 500},
    )
    index_seconds = time.perf_counter() - started
    client.indices.forcemerge(index=report.index, max_num_segments=1, wait_for_completion=True)
    log.info("indexed %d chunks into %s in %.1f s", report.count, report.index, index_seconds)

    config = RetrieverConfig()
    overrides = {
        key: value
        for key, value in {
            "window": args.window,
            "num_candidates": args.num_candidates,
            "rank_constant": args.rank_constant,
        }.items()
        if value is not None
    }
    config = replace(config, **overrides)
    inline = replace(config, ids_only_hybrid=False)
    cached_encoder = CachedQueryEncoder(query_texts, query_vectors)
    retriever = HybridRetriever(client, args.alias, cached_encoder, config)

    # With several chunks per document, 100 chunks cover fewer than 100 documents.
    chunk_k = 100 if args.chunk_words <= 0 else 200
    mode_names = args.modes.split(",")
    modes: dict[str, Any] = {}
    for mode in mode_names:
        log.info("running mode %s", mode)
        modes[mode] = run_mode(retriever, mode, queries, qrels, chunk_k=chunk_k)

    variants: dict[str, LatencyVariant] = {
        mode: (
            HybridRetriever(client, args.alias, embedder, config),
            HybridRetriever(client, args.alias, cached_encoder, config),
            mode,
        )
        for mode in mode_names
    }
    for mode in ("hybrid_rrf", "hybrid_linear"):
        if mode in mode_names:
            variants[f"{mode}_inline"] = (
                HybridRetriever(client, args.alias, embedder, inline),
                HybridRetriever(client, args.alias, cached_encoder, inline),
                mode,
            )
    log.info("measuring latency (%d queries x %d variants)", len(queries), len(variants))
    latency = measure_latency(variants, query_texts)
    for mode in mode_names:
        modes[mode].update(latency[mode])
    ratios = latency_ratios(latency) if "knn" in latency else {}

    stemming: dict[str, Any] = {}
    if not args.no_stemming_rows:
        log.info("BM25 stemming rows")
        stemming = stemming_rows(
            client, args.alias, chunks, embedder.dims, embedder.model_id, queries, qrels, chunk_k
        )
    sweep = test_sweep(retriever, queries, qrels, chunk_k) if args.sweep else []

    reference = exact_dense_reference(chunk_vectors, query_vectors, chunks, queries, qrels)
    singles = [modes[m]["ndcg@10"] for m in ("bm25", "knn") if m in modes]
    checks = {
        f"{mode}_minus_best_single_ndcg@10": round(modes[mode]["ndcg@10"] - max(singles), 4)
        for mode in ("hybrid_rrf", "hybrid_linear")
        if mode in modes and singles
    }
    result = {
        "modes": modes,
        "latency": latency,
        "ratios": ratios,
        "hybrid_vs_best_single": checks,
        "bm25_stemming": stemming,
        "reference": {"exact_dense_float32": reference},
        "test_sweep_information_only": sweep,
        "setup": {
            "dataset": "BEIR SciFact test (300 queries, 339 qrels)",
            "documents": len(corpus),
            "chunks": report.count,
            "chunking": (
                "one chunk per abstract"
                if args.chunk_words <= 0
                else f"sentence-packed chunks of <= ~{args.chunk_words} words"
            )
            + "; embedding input title + ' ' + chunk text",
            "doc_level": "a document's rank is its best chunk's rank",
            "chunks_retrieved_per_query": chunk_k,
            "index": report.index,
            "index_seconds": round(index_seconds, 1),
            "analyzer": index_meta["analyzer"],
            "text_stemming": index_meta["text_stemming"],
            "bm25_fields": list(retriever.bm25_fields()),
            "vector_index": spec.vector_options.as_mapping(),
            "bm25_type": config.bm25_type,
            "bm25_tie_breaker": config.bm25_tie_breaker,
            "window": config.window,
            "num_candidates": config.num_candidates,
            "rank_constant": config.rank_constant,
            "linear_weights": list(config.linear_weights),
            "normalization": config.normalization,
            "fusion_defaults_from": "benchmarks/fusion_dev.py (PubMedQA dev split)",
            "ids_only_hybrid": config.ids_only_hybrid,
            "latency": (
                "one search() per query at k=10 after warm-up, variants interleaved; p50/p95_ms "
                "end to end (live query embedding + Elasticsearch + fusion), es_p50/es_p95_ms "
                "with a pre-computed query vector; *_inline = hybrid with _source on every "
                "candidate (the path before ids-only)"
            ),
            "metrics_library": f"ir-measures {version('ir-measures')} "
            f"(pytrec-eval-terrier {version('pytrec-eval-terrier')})",
            "embedding_model": Path(embedder.model_id).name,
            "elasticsearch": health.version,
            "elasticsearch_url": settings.cluster_spec().url,
            "cpu_count": os.cpu_count(),
            "load_average_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        },
    }
    headline = {
        "ndcg@10": {mode: row["ndcg@10"] for mode, row in modes.items()},
        "bm25_stemming_ndcg@10": {
            name: row["ndcg@10"] for name, row in stemming.items() if "ndcg@10" in row
        },
        **ratios,
    }
    print_table(modes, reference, latency, ratios, stemming)
    write_results(args.output, result, headline)
    log.info("wrote %s", args.output)
    if args.drop_index:
        for alias in (args.alias, f"{args.alias}-bm25-core", f"{args.alias}-bm25-english"):
            names = set(list_versions(client, alias)) | set(alias_indices(client, alias))
            for name in names:
                client.indices.delete(index=name, ignore_unavailable=True)
    return 0


def print_table(
    modes: dict[str, Any],
    reference: dict[str, Any],
    latency: dict[str, dict[str, float]],
    ratios: dict[str, float],
    stemming: dict[str, Any],
) -> None:
    header = f"{'mode':<22}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}"
    print(header)
    print("-" * len(header))
    for mode, row in modes.items():
        name = mode + ("*" if "effective_mode" in row else "")
        print(f"{name:<22}{row['ndcg@10']:>9.4f}{row['recall@100']:>8.4f}{row['mrr@10']:>8.4f}")
    print(
        f"{'exact dense ref':<22}{reference['ndcg@10']:>9.4f}{reference['recall@100']:>8.4f}"
        f"{reference['mrr@10']:>8.4f}"
    )
    fallbacks = [m for m, row in modes.items() if "effective_mode" in row]
    if fallbacks:
        print("* fell back to client-side RRF: " + str(modes[fallbacks[0]].get("note")))
    if stemming:
        print()
        print(f"{'BM25 stemming':<22}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}  fields")
        for name, row in stemming.items():
            if "ndcg@10" not in row:
                print(f"{name:<22}{row['note']}")
                continue
            print(
                f"{name:<22}{row['ndcg@10']:>9.4f}{row['recall@100']:>8.4f}"
                f"{row['mrr@10']:>8.4f}  {','.join(row['fields'])}"
            )
    print()
    lat = f"{'latency (ms)':<22}{'p50':>8}{'p95':>8}{'es p50':>8}{'es p95':>8}"
    print(lat)
    print("-" * len(lat))
    for name, row in latency.items():
        print(
            f"{name:<22}{row['p50_ms']:>8.1f}{row['p95_ms']:>8.1f}"
            f"{row['es_p50_ms']:>8.1f}{row['es_p95_ms']:>8.1f}"
        )
    for name, value in ratios.items():
        print(f"{name:<30}{value:>8.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
