"""A 3-node local Elasticsearch cluster under a bounded search load while one node goes away.

    .venv/bin/python benchmarks/cluster.py                # stop (SIGTERM) the elected master
    .venv/bin/python benchmarks/cluster.py --modes stop,kill   # then also a crash (SIGKILL)

Starts its own cluster (HTTP --port .. --port+2, transport +100; loopback only) from the
project's distribution, builds a replicated index (3 primaries, 1 replica) through the project's
rebuild + alias code, and for each mode: one thread issues BM25+kNN searches through a client
that knows all three nodes; after --disrupt-after searches the elected master is stopped; the
drill waits until the cluster has noticed (2 nodes) and goes on until at least 50 searches ran
after that. Measured: searches failed / total (during the node stop and overall) and the
failover window (first failed search's start to the last one's end). Between modes the node
rejoins and the cluster returns to green. Prints a table and writes
benchmarks/results/cluster.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

from llmops_dagster.config import apply_offline_env_defaults

apply_offline_env_defaults()  # this script is where the process starts
from results_file import write_results

from llmops_dagster.config import PROJECT_ROOT, Settings
from llmops_dagster.search.aliases import rebuild
from llmops_dagster.search.client import make_client
from llmops_dagster.search.mapping import IndexSpec, build_index_body
from llmops_dagster.services.drill_corpus import DIMS, MODEL_ID, drill_docs, drill_search
from llmops_dagster.services.elasticsearch_local import (
    fetch_distribution,
    start_node,
    stop_node,
)
from llmops_dagster.services.es_cluster import measure_failover, start_cluster, stop_cluster
from llmops_dagster.services.local import local_cluster

RESULTS = Path(__file__).parent / "results" / "cluster.json"
ALIAS = "bench-cluster"
SHARDS = 3


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes have used: on a busy shared box wall-clock start
    times say little, CPU seconds ÷ cores is what a quiet box of that size would need."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9281, help="HTTP port of node 1")
    parser.add_argument("--modes", default="stop", help="comma-separated: stop (SIGTERM), kill")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--disrupt-after", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"stop", "kill"}:
        raise SystemExit(f"--modes takes stop and/or kill, got {args.modes!r}")

    base = Settings()
    fetch_distribution(base.es_dist_dir, base.local_node.version)
    root = base.home / "elasticsearch" / f"bench-cluster-{args.port}"
    cluster = local_cluster(base, nodes=3, root=root, port=args.port)
    stop_cluster(cluster)
    for node in cluster.nodes:
        shutil.rmtree(node.node_dir / "data", ignore_errors=True)
    began = time.monotonic()
    started = start_cluster(cluster, log=print)
    cluster_start_s = time.monotonic() - began
    cluster_start_cpu_s = _cpu_seconds([node["pid"] for node in started["nodes"]])
    client = make_client(
        base.override(elasticsearch={"url": cluster.url}).cluster_spec(), request_timeout=60
    )
    drills: dict[str, Any] = {}
    try:
        docs = drill_docs(args.docs)
        body = build_index_body(
            IndexSpec(dims=DIMS, model_id=MODEL_ID, shards=SHARDS, replicas=1),
            client=client,
        )
        rebuild(client, ALIAS, docs, expected_count=len(docs), index_body=body)
        client.cluster.health(wait_for_status="green", timeout="120s")
        for mode in modes:
            master = client.cat.master(format="json")[0]["node"]
            (victim,) = [n for n in cluster.nodes if n.node_name == master]

            def settle(master: str = master) -> None:
                health = client.cluster.health(wait_for_nodes="2", timeout="120s")
                if health["timed_out"]:
                    raise RuntimeError(f"the cluster did not notice {master} left: {health}")

            report = measure_failover(
                lambda i: drill_search(client, ALIAS, i % args.docs),
                lambda victim=victim, mode=mode: stop_node(victim, kill=mode == "kill"),
                settle,
                searches=args.searches,
                disrupt_after=args.disrupt_after,
            )
            health = client.cluster.health()
            count = client.count(index=ALIAS)["count"]
            began = time.monotonic()
            start_node(victim, timeout=300)
            client.cluster.health(wait_for_status="green", wait_for_nodes="3", timeout="300s")
            drills[mode] = {
                "stopped_master": master,
                **report.summary(),
                "health_with_node_down": health["status"],
                "unassigned_shards_with_node_down": health["unassigned_shards"],
                "docs_with_node_down": count,
                "docs_expected": len(docs),
                "rejoin_green_s": round(time.monotonic() - began, 3),
            }
    finally:
        client.close()
        stop_cluster(cluster)

    print(
        f"cluster start: {cluster_start_s:.1f} s wall, {cluster_start_cpu_s:.1f} CPU-s "
        f"in the 3 nodes ({os.cpu_count()} cores)"
    )
    print(
        f"{'mode':<6}{'stopped':<15}{'searches':>9}{'failed':>7}{'during':>8}{'failed':>7}"
        f"{'window s':>10}{'stop s':>8}{'settle s':>9}{'after':>7}{'failed':>7}{'health':>8}"
    )
    for mode, d in drills.items():
        settle_s = d["settled_s"] - d["disrupt_started_s"]
        print(
            f"{mode:<6}{d['stopped_master']:<15}{d['searches']:>9}{d['failed']:>7}"
            f"{d['searches_during']:>8}{d['failed_during']:>7}{d['failover_window_s']:>10.3f}"
            f"{d['disrupt_seconds']:>8.2f}{settle_s:>9.2f}{d['searches_after_settled']:>7}"
            f"{d['failed_after_settled']:>7}{d['health_with_node_down']:>8}"
        )
    result = {
        "nodes": cluster.size,
        "heap": base.local_node.heap,
        "es_version": base.local_node.version,
        "shards": SHARDS,
        "replicas": 1,
        "docs": args.docs,
        "searches_per_drill": args.searches,
        "disrupt_after": args.disrupt_after,
        "cluster_start_s": round(cluster_start_s, 3),
        "cluster_start_cpu_s": round(cluster_start_cpu_s, 1),
        "cpu_count": os.cpu_count(),
        "drills": drills,
    }
    # The history keeps each drill's failures and windows from the last three runs.
    headline = {
        f"{mode}_{key}": d[key]
        for mode, d in drills.items()
        for key in ("failed", "failed_during", "failover_window_s", "rejoin_green_s")
    }
    write_results(args.out, result, headline, root=PROJECT_ROOT)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
