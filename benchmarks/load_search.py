"""Bounded concurrent-search load through the project's retriever (loopback node only).

    .venv/bin/python benchmarks/load_search.py --clients 4 --seconds 10

Uses the alias of the demo (`llmops-dagster demo` first) and the golden questions as queries;
prints a table per mode and writes benchmarks/results/load_search.json through
`results_file.write_results` (git sha, the last three runs' errors / qps / p95 per mode under
`history`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmops_dagster.config import apply_offline_env_defaults

apply_offline_env_defaults()  # this script is where the process starts
from results_file import write_results

from llmops_dagster.config import Settings
from llmops_dagster.embed.model import load_embedder
from llmops_dagster.search.client import check_cluster, make_client
from llmops_dagster.search.load import run_load
from llmops_dagster.search.retriever import HybridRetriever

RESULTS = Path(__file__).parent / "results" / "load_search.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    settings = Settings()
    if not settings.es_url.startswith(("http://127.", "http://localhost")):
        raise SystemExit("load tests only target a loopback node")
    client = make_client(settings.cluster_spec())
    check_cluster(client, settings.cluster_spec())
    golden = Path(__file__).resolve().parents[1] / "data" / "golden" / "qa.jsonl"
    queries = [json.loads(line)["question"] for line in golden.read_text().splitlines() if line]
    retriever = HybridRetriever(
        client,
        settings.elasticsearch.index_alias,
        load_embedder(
            settings.models.embedding_model,
            backend=settings.models.embedding_backend,
            cache_dir=settings.models_cache_dir,
        ),
    )
    results = {}
    print(f"{'mode':<14}{'reqs':>7}{'errors':>8}{'qps':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for mode in ("bm25", "knn", "hybrid_rrf"):
        summary = run_load(
            retriever, queries, clients=args.clients, duration_s=args.seconds,
            max_requests=args.max_requests, mode=mode,
        ).summary()  # fmt: skip
        results[mode] = summary
        print(
            f"{mode:<14}{summary['requests']:>7}{summary['errors']:>8}{summary['qps']:>8}"
            f"{summary['p50_ms']:>9}{summary['p95_ms']:>9}{summary['p99_ms']:>9}"
        )
    data = {
        "clients": args.clients,
        "seconds_per_mode": args.seconds,
        "max_requests": args.max_requests,
        "queries": len(queries),
        "modes": results,
    }
    # What a person follows over time: every mode's errors (must stay 0), throughput and tail.
    headline = {
        f"{mode}_{key}": summary[key]
        for mode, summary in results.items()
        for key in ("errors", "qps", "p95_ms")
    }
    write_results(args.out, data, headline)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
