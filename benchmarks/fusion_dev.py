"""Fusion defaults chosen on a DEV split (PubMedQA PQA-L dev questions), never on SciFact test.

Why a separate split: ``hybrid_linear`` weights picked on the SciFact test claims and then
reported on the same claims overstate what a new corpus gets. Here the corpus is the 1,000
PubMedQA abstracts (each one's ``contexts`` joined: background, methods, results; the
conclusion is not in the corpus), the queries are the 500 questions of the ``dev`` split, and
each question's only relevant document is its own abstract. The sweep covers the RRF constant
and the linear weights and normalisation, each at windows 50/100/200; the window both modes share
is the one whose best RRF and best linear rows have the highest mean nDCG@10, and the best row of
each family at that window becomes :class:`~llmops_dagster.search.retriever.RetrieverConfig`'s
default (ties: the earlier row in sweep order, i.e. the more conventional value).
``retrieval_scifact.py`` then reports the SciFact test numbers of those defaults.

Indexes through the project's mapping/writer/rebuild (Python-stemmed BM25 on a node without the
``english`` analyzer), embeds with the project's model (cached in ``.llmops/bench-cache/``).

Usage::

    ELASTICSEARCH_URL=http://127.0.0.1:9266 .venv/bin/python benchmarks/fusion_dev.py [DATA_DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from llmops_dagster.config import Settings, apply_offline_env_defaults

apply_offline_env_defaults()  # this script is where the process starts
from ir_eval import doc_level_run, evaluate
from results_file import write_results
from retrieval_scifact import CachedQueryEncoder, embed_cached, read_jsonl, run_mode

from llmops_dagster.embed.model import load_embedder
from llmops_dagster.search.aliases import alias_indices, list_versions, rebuild
from llmops_dagster.search.client import check_cluster, make_client
from llmops_dagster.search.fusion import linear_fuse, rrf_fuse
from llmops_dagster.search.mapping import IndexSpec, build_index_body
from llmops_dagster.search.retriever import HybridRetriever, RetrieverConfig

log = logging.getLogger("fusion_dev")

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "bench" / "pubmedqa-qa"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "fusion_dev.json"

RRF_CONSTANTS = (60, 40, 20, 10, 100)
WINDOWS = (100, 50, 200)
LINEAR_BM25_WEIGHTS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8)
NORMALIZATIONS = ("minmax", "l2")


class _DocHit:
    def __init__(self, doc_id: str) -> None:
        self.doc_id = doc_id


def pubmedqa_chunks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chunk per abstract, in the retrieval_scifact chunk shape (doc id ``pubmedqa:<pmid>``)."""
    from llmops_dagster.hashing import content_hash
    from llmops_dagster.text.chunking import make_chunk_id

    chunks = []
    for item in items:
        doc_id = f"pubmedqa:{item['id']}"
        text = " ".join(item["contexts"])
        chunks.append(
            {
                "chunk_id": make_chunk_id(doc_id, 0, text),
                "doc_id": doc_id,
                "source": "pubmedqa",
                "title": "",
                "uri": f"pubmed://{item['id']}",
                "position": 0,
                "section": "",
                "text": text,
                "content_hash": content_hash(text),
            }
        )
    return chunks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--alias", default="bench-pubmedqa-dev")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--drop-index", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)

    settings = Settings()
    client = make_client(settings.cluster_spec(), request_timeout=120)
    health = check_cluster(client, settings.cluster_spec())
    items = read_jsonl(args.data / "qa.jsonl")
    dev = [item for item in items if item["split"] == "dev"]
    queries = [{"_id": item["id"], "text": item["question"]} for item in dev]
    qrels = {item["id"]: {item["id"]: 1} for item in dev}
    chunks = pubmedqa_chunks(items)

    embedder = load_embedder(
        settings.models.embedding_model,
        backend=settings.models.embedding_backend,
        cache_dir=settings.models_cache_dir,
    )
    doc_vectors = embed_cached(embedder, [c["text"] for c in chunks], "pubmedqa-docs")
    query_texts = [q["text"] for q in queries]
    query_vectors = embed_cached(embedder, query_texts, "pubmedqa-dev-queries")

    spec = IndexSpec(dims=embedder.dims, model_id=embedder.model_id)
    body = build_index_body(spec, client=client, meta={"benchmark": "pubmedqa-dev"})
    docs = (
        {**chunk, "model_id": embedder.model_id, "embedding": vector}
        for chunk, vector in zip(chunks, doc_vectors, strict=True)
    )
    report = rebuild(client, args.alias, docs, len(chunks), body, keep=0)
    client.indices.forcemerge(index=report.index, max_num_segments=1, wait_for_completion=True)

    # The doc-level evaluation maps "pubmedqa:<pmid>" to "<pmid>", as for SciFact.
    retriever = HybridRetriever(
        client, args.alias, CachedQueryEncoder(query_texts, query_vectors), RetrieverConfig()
    )
    singles = {mode: run_mode(retriever, mode, queries, qrels) for mode in ("bm25", "knn")}
    # The candidate lists are fetched once (max window deep, ids + scores) and every parameter
    # combination is fused here with the retriever's own fusion functions: the same numbers as
    # a retriever run per combination (checked below for the chosen ones), minutes faster.
    depth = max(WINDOWS)
    bm25_lists = retriever.search_many(query_texts, mode="bm25", k=depth)
    knn_lists = retriever.search_many(query_texts, mode="knn", k=depth)
    doc_of = {h.chunk_id: h.doc_id for hits in (*bm25_lists, *knn_lists) for h in hits}

    def score(fuse: Any) -> dict[str, Any]:
        runs = {}
        for query, bm25, knn in zip(queries, bm25_lists, knn_lists, strict=True):
            fused = fuse(bm25, knn)[:100]
            runs[query["_id"]] = [_DocHit(doc_of[chunk_id]) for chunk_id, _ in fused]
        return evaluate(doc_level_run(runs), qrels)

    rrf_rows = []
    for window in WINDOWS:
        for rank_constant in RRF_CONSTANTS:
            row = score(
                lambda bm25, knn, w=window, c=rank_constant: rrf_fuse(
                    [[h.chunk_id for h in bm25[:w]], [h.chunk_id for h in knn[:w]]],
                    rank_constant=c,
                    window=w,
                )
            )
            rrf_rows.append({"window": window, "rank_constant": rank_constant, **row})
            log.info("rrf window %d k %d: %.4f", window, rank_constant, row["ndcg@10"])
    linear_rows = []
    for window in WINDOWS:
        for normalization in NORMALIZATIONS:
            for bm25_weight in LINEAR_BM25_WEIGHTS:
                weights = (bm25_weight, round(1 - bm25_weight, 2))
                # The retriever fetches max(window, k) per list and linear fusion uses all of
                # it (normalisation spans the whole list): mirrored here, k = 100.
                fetched = max(window, 100)
                row = score(
                    lambda bm25, knn, w=fetched, ws=weights, n=normalization: linear_fuse(
                        [
                            {h.chunk_id: h.score for h in bm25[:w]},
                            {h.chunk_id: h.score for h in knn[:w]},
                        ],
                        weights=list(ws),
                        normalization=n,
                    )
                )
                linear_rows.append(
                    {"window": window, "weights": list(weights),
                     "normalization": normalization, **row}
                )  # fmt: skip
                log.info("linear %s %s %s: %.4f", window, normalization, weights, row["ndcg@10"])

    # One window serves both hybrid modes (RetrieverConfig.window): the window whose best RRF
    # and best linear rows have the highest mean nDCG@10, then the best row of each family at
    # that window. max() keeps the first of equal rows: sweep order puts conventional values
    # first.
    def best_at(rows: list[dict[str, Any]], window: int) -> dict[str, Any]:
        return max((r for r in rows if r["window"] == window), key=lambda r: r["ndcg@10"])

    window = max(
        WINDOWS,
        key=lambda w: best_at(rrf_rows, w)["ndcg@10"] + best_at(linear_rows, w)["ndcg@10"],
    )
    best_rrf, best_linear = best_at(rrf_rows, window), best_at(linear_rows, window)
    best_single = max(row["ndcg@10"] for row in singles.values())
    # The chosen settings through the retriever itself (ids-only hybrid, k=100): must agree.
    check = {
        "hybrid_rrf": run_mode(
            retriever, "hybrid_rrf", queries, qrels,
            window=window, rank_constant=best_rrf["rank_constant"],
        ),
        "hybrid_linear": run_mode(
            retriever, "hybrid_linear", queries, qrels, window=window,
            weights=tuple(best_linear["weights"]), normalization=best_linear["normalization"],
        ),
    }  # fmt: skip
    chosen = {
        "window": window,
        "rank_constant": best_rrf["rank_constant"],
        "linear_weights": best_linear["weights"],
        "normalization": best_linear["normalization"],
    }
    result = {
        "chosen": chosen,
        "best": {
            "bm25": singles["bm25"],
            "knn": singles["knn"],
            "hybrid_rrf": best_rrf,
            "hybrid_linear": best_linear,
            "hybrid_rrf_minus_best_single_ndcg@10": round(best_rrf["ndcg@10"] - best_single, 4),
            "hybrid_linear_minus_best_single_ndcg@10": round(
                best_linear["ndcg@10"] - best_single, 4
            ),
        },
        "retriever_check": check,
        "rrf_sweep": rrf_rows,
        "linear_sweep": linear_rows,
        "setup": {
            "dataset": "PubMedQA PQA-L dev split: 500 questions over all 1,000 abstracts "
            "(contexts joined, conclusions excluded); one relevant abstract per question",
            "index": report.index,
            "analyzer": body["mappings"]["_meta"]["analyzer"],
            "text_stemming": body["mappings"]["_meta"]["text_stemming"],
            "num_candidates": retriever.config.num_candidates,
            "chunks_retrieved_per_query": 100,
            "embedding_model": Path(embedder.model_id).name,
            "elasticsearch": health.version,
            "cpu_count": os.cpu_count(),
        },
    }
    print(f"{'run':<40}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}")
    for name, row in [
        ("bm25", singles["bm25"]),
        ("knn", singles["knn"]),
        (f"best rrf (k={best_rrf['rank_constant']}, window={best_rrf['window']})", best_rrf),
        (
            f"best linear ({best_linear['weights']}, {best_linear['normalization']}, "
            f"window={best_linear['window']})",
            best_linear,
        ),
    ]:
        print(f"{name:<40}{row['ndcg@10']:>9.4f}{row['recall@100']:>8.4f}{row['mrr@10']:>8.4f}")
    headline = {
        "bm25_ndcg@10": singles["bm25"]["ndcg@10"],
        "knn_ndcg@10": singles["knn"]["ndcg@10"],
        "best_rrf_ndcg@10": best_rrf["ndcg@10"],
        "best_linear_ndcg@10": best_linear["ndcg@10"],
        "chosen": chosen,
    }
    write_results(args.output, result, headline)
    if args.drop_index:
        for name in set(list_versions(client, args.alias)) | set(alias_indices(client, args.alias)):
            client.indices.delete(index=name, ignore_unavailable=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
