"""A local Elasticsearch cluster of N nodes from the same distribution as the single node.

Each node is a :class:`~llmops_dagster.services.elasticsearch_local.LocalNode` with its own
folder (config, data, logs, pid), a loopback HTTP port (base, base+1, ...) and a transport
port 100 above it. The nodes find each other through ``discovery.seed_hosts`` and elect their
first master among ``cluster.initial_master_nodes``. All nodes are launched together: a node
of a forming cluster answers no health until a majority of the master-eligible nodes is up,
so waiting for each node in turn would wait forever.

Also here: :func:`measure_failover`, the bounded "search while a node stops" drill that the
cluster test and ``benchmarks/cluster.py`` share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmops_dagster.services.elasticsearch_local import (
    ElasticsearchSetupError,
    LocalNode,
    Log,
    _log_tail,
    check_ports_free,
    cluster_health,
    node_status,
    start_node,
    stop_node,
)

CLUSTER_NAME = "llmops-cluster"


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class LocalCluster:
    """The nodes of one local cluster, in start order (node 1 first)."""

    nodes: tuple[LocalNode, ...]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node, comma-separated: what ELASTICSEARCH_URL takes for a cluster, so the
        client retries another node when one is down."""
        return ",".join(self.urls)

    @property
    def size(self) -> int:
        return len(self.nodes)


def cluster_nodes(
    dist_home: Path,
    root: Path,
    *,
    size: int,
    port: int,
    heap: str = "512m",
    cluster_name: str = CLUSTER_NAME,
    java_home: Path | None = None,
    fallback_java_home: Path | None = None,
    extra_java_opts: str = "",
    extra_settings: tuple[tuple[str, Any], ...] = (),
) -> LocalCluster:
    """``size`` nodes under ``root/node-<i>``: HTTP on ``port .. port+size-1``, transport on
    the same + 100, every node seeded with every transport address."""
    if size < 1:
        raise ElasticsearchSetupError(f"A cluster needs at least 1 node, got {size}.")
    if port < 1 or port + size - 1 + 100 > 65535:
        raise ElasticsearchSetupError(
            f"Ports {port}..{port + size - 1} (+100 for transport) do not fit in 1..65535; "
            "choose another base port with LLMOPS_ES_PORT."
        )
    names = tuple(f"llmops-node-{i}" for i in range(1, size + 1))
    seeds = tuple(f"127.0.0.1:{port + 100 + i}" for i in range(size))
    return LocalCluster(
        tuple(
            LocalNode(
                dist_home=dist_home,
                node_dir=root / f"node-{i + 1}",
                port=port + i,
                heap=heap,
                cluster_name=cluster_name,
                extra_settings=extra_settings,
                java_home=java_home,
                fallback_java_home=fallback_java_home,
                extra_java_opts=extra_java_opts,
                node_name=names[i],
                seed_hosts=seeds,
                initial_master_nodes=names,
            )
            for i in range(size)
        )
    )


def map_nodes(cluster: LocalCluster, change: Callable[[LocalNode], LocalNode]) -> LocalCluster:
    """The same cluster with ``change`` applied to each node (e.g. relocation for root)."""
    return replace(cluster, nodes=tuple(change(node) for node in cluster.nodes))


def cluster_status(cluster: LocalCluster) -> dict[str, Any]:
    """Per-node process state plus the cluster's health as the first answering node sees it."""
    nodes = [{**node_status(node), "name": node.node_name} for node in cluster.nodes]
    health = next(
        (h for n in nodes if n["running"] and (h := cluster_health(n["url"])) is not None), None
    )
    status = (health or {}).get("status")
    return {
        "url": cluster.url,
        "urls": cluster.urls,
        "nodes": nodes,
        "size": cluster.size,
        "running": sum(1 for n in nodes if n["running"]),
        "number_of_nodes": (health or {}).get("number_of_nodes"),
        "healthy": status in {"green", "yellow", "secured"},
        "status": status,
    }


def wait_for_cluster(
    cluster: LocalCluster, *, nodes: int | None = None, timeout: float = 240.0
) -> dict[str, Any]:
    """Wait until ``nodes`` (default: all) have joined and health is yellow or green.

    Fails early, with that node's log, when a node's process dies while we wait.
    """
    want = cluster.size if nodes is None else nodes
    deadline = time.monotonic() + timeout
    status = cluster_status(cluster)
    while time.monotonic() < deadline:
        status = cluster_status(cluster)
        if status["healthy"] and (status["number_of_nodes"] or 0) >= want:
            return status
        for node, state in zip(cluster.nodes, status["nodes"], strict=True):
            if state["pid"] is None and node.pid_file.exists():
                raise ElasticsearchSetupError(
                    f"Elasticsearch node {node.node_name} ({node.url}) exited while the cluster "
                    f"formed; last log lines:\n{_log_tail(node)}"
                )
        time.sleep(1.0)
    raise ElasticsearchSetupError(
        f"The cluster at {cluster.url} did not reach {want} nodes and yellow/green within "
        f"{timeout:.0f}s (nodes: {status['number_of_nodes']}, health: {status['status']}); "
        f"last log lines of {cluster.nodes[0].node_name}:\n{_log_tail(cluster.nodes[0])}"
    )


def start_cluster(
    cluster: LocalCluster, *, timeout: float = 240.0, log: Log = _quiet
) -> dict[str, Any]:
    """Start every node that is not running (all at once) and wait for the whole cluster.

    Ports are checked for all nodes before any starts, so a taken port leaves nothing behind;
    a node that fails to start stops the nodes this call started.
    """
    before = [node_status(node)["running"] for node in cluster.nodes]
    for node, running in zip(cluster.nodes, before, strict=True):
        if not running:
            check_ports_free(node)
    log(f"Starting a {cluster.size}-node Elasticsearch cluster on {', '.join(cluster.urls)} ...")
    with ThreadPoolExecutor(max_workers=cluster.size) as pool:
        futures = [
            pool.submit(start_node, node, timeout=timeout, log=log, wait=False)
            for node in cluster.nodes
        ]
    errors = []
    for node, future in zip(cluster.nodes, futures, strict=True):
        try:
            future.result()
        except Exception as exc:  # e.g. JavaNotFound: reported per node, after the cleanup
            errors.append(f"{node.node_name} ({node.url}): {exc}")
    try:
        if errors:
            raise ElasticsearchSetupError("\n".join(errors))
        status = wait_for_cluster(cluster, timeout=timeout)
    except BaseException:
        for node, running in zip(cluster.nodes, before, strict=True):
            if not running:
                stop_node(node, log=log)
        raise
    name = cluster.nodes[0].cluster_name
    log(f"Cluster {name} is {status['status']} with {status['number_of_nodes']} nodes")
    return status


def stop_cluster(cluster: LocalCluster, *, log: Log = _quiet, timeout: float = 60.0) -> int:
    """Stop every node (in parallel: each waits up to ``timeout`` for its own graceful shutdown,
    then is killed); how many ran."""
    with ThreadPoolExecutor(max_workers=cluster.size) as pool:
        stopped = list(
            pool.map(lambda node: stop_node(node, log=log, timeout=timeout), cluster.nodes)
        )
    return sum(stopped)


# --------------------------------------------------------------------------------------------
# A failover drill: searches keep coming while a node stops
# --------------------------------------------------------------------------------------------


@dataclass
class SearchOutcome:
    index: int
    started_s: float
    ended_s: float
    ok: bool
    error: str = ""


@dataclass
class FailoverReport:
    """Times are seconds since the drill began; the window spans the first failed search's
    start to the last failed search's end (0 when none failed)."""

    outcomes: list[SearchOutcome] = field(default_factory=list)
    disrupt_started_s: float = 0.0
    disrupt_ended_s: float = 0.0
    settled_s: float = 0.0

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def failures(self) -> list[SearchOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def window_s(self) -> float:
        failed = self.failures
        return max(o.ended_s for o in failed) - min(o.started_s for o in failed) if failed else 0.0

    @property
    def after_settled(self) -> list[SearchOutcome]:
        return [o for o in self.outcomes if o.started_s >= self.settled_s]

    @property
    def during(self) -> list[SearchOutcome]:
        """Searches that began between the disruption's start and the settled cluster."""
        return [o for o in self.outcomes if self.disrupt_started_s <= o.started_s < self.settled_s]

    def summary(self) -> dict[str, Any]:
        failed = self.failures
        return {
            "searches": self.total,
            "failed": len(failed),
            "failover_window_s": round(self.window_s, 3),
            "first_failure_s": round(min(o.started_s for o in failed), 3) if failed else None,
            "last_failure_s": round(max(o.ended_s for o in failed), 3) if failed else None,
            "disrupt_started_s": round(self.disrupt_started_s, 3),
            "disrupt_seconds": round(self.disrupt_ended_s - self.disrupt_started_s, 3),
            "settled_s": round(self.settled_s, 3),
            "searches_during": len(self.during),
            "failed_during": sum(1 for o in self.during if not o.ok),
            "searches_after_settled": len(self.after_settled),
            "failed_after_settled": sum(1 for o in self.after_settled if not o.ok),
            "first_errors": [o.error for o in failed[:5]],
        }


def measure_failover(
    search: Callable[[int], None],
    disrupt: Callable[[], Any],
    settle: Callable[[], Any],
    *,
    searches: int = 300,
    disrupt_after: int = 50,
    min_after_settled: int = 50,
    interval_s: float = 0.01,
    max_seconds: float = 180.0,
) -> FailoverReport:
    """One thread runs ``search(i)`` back to back (``interval_s`` apart; an exception is a
    failed search, recorded, never fatal) while this thread calls ``disrupt()`` (stop a node,
    rebuild the index) once ``disrupt_after`` searches are done and then ``settle()`` (e.g. wait
    until the cluster has noticed the node is gone).

    The load is bounded: it ends after ``searches`` searches once at least
    ``min_after_settled`` of them began after ``settle()`` returned, or after ``max_seconds``.
    """
    report = FailoverReport()
    began = time.monotonic()
    settled = threading.Event()
    go = threading.Event()
    done = threading.Event()
    abort = threading.Event()

    def now() -> float:
        return time.monotonic() - began

    def load() -> None:
        i = 0
        after = 0
        try:
            while now() < max_seconds and not abort.is_set():
                if i >= searches and settled.is_set() and after >= min_after_settled:
                    return
                start = now()
                try:
                    search(i)
                    outcome = SearchOutcome(i, start, now(), True)
                except Exception as exc:  # the drill records failures; it never stops on them
                    outcome = SearchOutcome(i, start, now(), False, f"{type(exc).__name__}: {exc}")
                report.outcomes.append(outcome)
                if settled.is_set() and start >= report.settled_s:
                    after += 1
                i += 1
                if i == disrupt_after:
                    go.set()
                time.sleep(interval_s)
        finally:
            go.set()  # never leave the main thread waiting on a load that ended early
            done.set()

    worker = threading.Thread(target=load, name="failover-load", daemon=True)
    worker.start()
    try:
        go.wait()
        if not done.is_set():
            report.disrupt_started_s = now()
            disrupt()
            report.disrupt_ended_s = now()
            settle()
            report.settled_s = now()
            settled.set()
    except BaseException:
        abort.set()  # a failed disruption ends the load at once instead of at max_seconds
        raise
    finally:
        worker.join()
    return report
