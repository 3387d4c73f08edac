"""A real 3-node Elasticsearch cluster (the project's distribution, three node folders): the index
survives a node stop under search load, a rebuild swaps the alias with a node down, and the node
rejoins to a green, rebalanced cluster.

The tests run in file order against one module-scoped cluster (started once, stopped at the end)
and share its state: each one starts where the previous one left the cluster. Ports: HTTP
9271-9273, transport 9371-9373 (``LLMOPS_TEST_ES_CLUSTER_PORT`` moves the base).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.config import Settings
from llmops_dagster.search.aliases import alias_indices, current_index, list_versions, rebuild
from llmops_dagster.search.client import make_client
from llmops_dagster.search.mapping import IndexSpec, build_index_body
from llmops_dagster.services.drill_corpus import DIMS, MODEL_ID, drill_docs, drill_search
from llmops_dagster.services.elasticsearch_local import (
    ElasticsearchSetupError,
    LocalNode,
    fetch_distribution,
    start_node,
    stop_node,
)
from llmops_dagster.services.es_cluster import (
    CLUSTER_NAME,
    LocalCluster,
    cluster_status,
    measure_failover,
    start_cluster,
    stop_cluster,
)
from llmops_dagster.services.local import local_cluster
from tests.conftest import THROWAWAY_STOP_S
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

CLUSTER_PORT = int(os.environ.get("LLMOPS_TEST_ES_CLUSTER_PORT", "9271"))
ALIAS = "cluster-chunks"
SHARDS = 3  # 3 primaries + 3 replicas: two shard copies per node
FIRST_DOCS = 60
SECOND_DOCS = 66  # the rebuild adds 6 documents


def _index_body(client: Elasticsearch) -> dict[str, Any]:
    body = build_index_body(
        IndexSpec(dims=DIMS, model_id=MODEL_ID, shards=SHARDS, replicas=1),
        client=client,
    )
    # A departed node's replicas wait 1 minute (the default) before being re-created on the
    # survivors; 10 minutes keeps "yellow while the node is away" true on a slow box, and lets
    # the returning node take its own copies back.
    body["settings"]["index"]["unassigned.node_left.delayed_timeout"] = "10m"
    return body


def _search(client: Elasticsearch, doc: int) -> None:
    """BM25 + kNN for document ``doc``; raises unless every shard answered and it ranks first."""
    try:
        drill_search(client, ALIAS, doc, width=3)
    except RuntimeError as exc:
        raise AssertionError(str(exc)) from exc


def _all_fetchable(client: Elasticsearch, count: int) -> list[str]:
    """Ids of the ``count`` expected documents that cannot be fetched (empty: none lost)."""
    ids = [f"c{i:03d}" for i in range(count)]
    found = client.mget(index=ALIAS, ids=ids, source=False)["docs"]
    return [doc["_id"] for doc in found if not doc.get("found")]


def _shards_per_node(client: Elasticsearch) -> Counter[str]:
    rows = client.cat.shards(format="json", h="index,shard,prirep,state,node")
    return Counter(row["node"] for row in rows if row["state"] == "STARTED")


@dataclass
class Drill:
    cluster: LocalCluster
    client: Elasticsearch
    first_index: str
    victim: LocalNode | None = None
    second_index: str | None = None


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    base = Settings()
    root = base.home / "elasticsearch" / f"test-cluster-{CLUSTER_PORT}"
    try:
        fetch_distribution(base.es_dist_dir, base.local_node.version)
        # After the fetch: as root, each node may be relocated to a folder the unprivileged
        # Elasticsearch user can reach (a copy of the distribution goes with it).
        found = local_cluster(base, nodes=3, root=root, port=CLUSTER_PORT)
        stop_cluster(found)  # a cluster left by an interrupted run: start from empty data
        for node in found.nodes:
            shutil.rmtree(node.node_dir / "data", ignore_errors=True)
        start_cluster(found)
    except ElasticsearchSetupError as exc:
        pytest.fail(f"could not start the 3-node test cluster: {exc}", pytrace=False)
    try:
        yield found
    finally:
        stop_cluster(found, timeout=THROWAWAY_STOP_S)


@pytest.fixture(scope="module")
def drill(cluster: LocalCluster) -> Iterator[Drill]:
    # The comma-separated ELASTICSEARCH_URL of a cluster, through the settings like any user's.
    settings = Settings().override(elasticsearch={"url": cluster.url})
    client = make_client(settings.cluster_spec(), request_timeout=60)
    docs = drill_docs(FIRST_DOCS, width=3)
    report = rebuild(
        client, ALIAS, docs, expected_count=FIRST_DOCS, index_body=_index_body(client),
        smoke_query_vector=docs[0]["embedding"], smoke_query_text=docs[0]["text"],
    )  # fmt: skip
    yield Drill(cluster=cluster, client=client, first_index=report.index)
    client.close()


def test_three_nodes_form_one_cluster_with_every_node_holding_shards(drill: Drill) -> None:
    client = drill.client
    assert len(client.transport.node_pool.all()) == 3  # the client knows every node
    health = client.cluster.health(wait_for_status="green", timeout="120s")
    assert (health["cluster_name"], health["status"], health["number_of_nodes"]) == (
        CLUSTER_NAME, "green", 3,
    )  # fmt: skip
    names = sorted(row["name"] for row in client.cat.nodes(format="json", h="name"))
    assert names == ["llmops-node-1", "llmops-node-2", "llmops-node-3"]
    assert (health["active_primary_shards"], health["active_shards"]) == (SHARDS, 2 * SHARDS)
    per_node = wait_until(
        lambda: (c := _shards_per_node(client)) == Counter(dict.fromkeys(names, 2)) and c,
        timeout_s=120, what="two shard copies on each node", interval_s=1.0,
    )  # fmt: skip
    assert sum(per_node.values()) == 2 * SHARDS
    assert client.count(index=ALIAS)["count"] == FIRST_DOCS
    status = cluster_status(drill.cluster)
    assert (status["running"], status["number_of_nodes"], status["status"]) == (3, 3, "green")


def test_searches_keep_answering_while_the_master_node_stops(drill: Drill) -> None:
    client = drill.client
    master = client.cat.master(format="json")[0]["node"]
    (victim,) = [node for node in drill.cluster.nodes if node.node_name == master]
    drill.victim = victim

    def settle() -> None:
        health = client.cluster.health(wait_for_nodes="2", timeout="90s")
        assert not health["timed_out"], f"the cluster did not notice {master} left: {health}"

    report = measure_failover(
        lambda i: _search(client, i % FIRST_DOCS), lambda: stop_node(victim), settle,
        searches=300, disrupt_after=50, min_after_settled=50,
    )  # fmt: skip
    summary = report.summary()
    print(f"\nnode stop under search load ({master}, the elected master): {summary}")
    assert report.disrupt_started_s > 0, summary  # the node stopped while searches ran
    assert report.total >= 300
    assert summary["searches_after_settled"] >= 50
    assert summary["failed_after_settled"] == 0, summary["first_errors"]

    health = client.cluster.health()
    assert health["status"] == "yellow"  # not red: every primary is active on the survivors
    assert (health["number_of_nodes"], health["active_primary_shards"]) == (2, SHARDS)
    # The two copies the stopped node held wait for it; nothing else is missing.
    assert (health["active_shards"], health["unassigned_shards"]) == (2 * SHARDS - 2, 2)
    assert client.cat.master(format="json")[0]["node"] != master  # a new master was elected
    assert client.count(index=ALIAS)["count"] == FIRST_DOCS
    assert _all_fetchable(client, FIRST_DOCS) == []


def test_rebuild_and_atomic_alias_swap_with_a_node_down(drill: Drill) -> None:
    client = drill.client
    assert drill.victim is not None, "the previous test stops a node"
    assert cluster_status(drill.cluster)["running"] == 2
    docs = drill_docs(SECOND_DOCS, width=3)
    rebuilt: dict[str, Any] = {}

    def do_rebuild() -> None:
        rebuilt["report"] = rebuild(
            client, ALIAS, docs, expected_count=SECOND_DOCS, index_body=_index_body(client),
            smoke_query_vector=docs[0]["embedding"], smoke_query_text=docs[0]["text"],
        )  # fmt: skip

    # Searches keep coming through the alias while the new index is built and swapped in.
    load = measure_failover(
        lambda i: _search(client, i % FIRST_DOCS), do_rebuild, lambda: None,
        searches=60, disrupt_after=10, min_after_settled=20,
    )  # fmt: skip
    assert load.summary()["failed"] == 0, load.summary()["first_errors"]

    report = rebuilt["report"]
    drill.second_index = report.index
    assert report.previous_index == drill.first_index
    assert alias_indices(client, ALIAS) == [report.index] == [current_index(client, ALIAS)]
    assert list_versions(client, ALIAS) == [drill.first_index, report.index]  # old one kept
    assert client.count(index=ALIAS)["count"] == SECOND_DOCS
    assert _all_fetchable(client, SECOND_DOCS) == []
    # Both copies of the new index fit on the two running nodes; the cluster stays yellow
    # only because the old index's copies wait for the stopped node.
    new_health = client.cluster.health(index=report.index, wait_for_status="green", timeout="60s")
    assert new_health["status"] == "green"
    assert client.cluster.health()["status"] == "yellow"


def test_stopped_node_rejoins_green_and_shards_rebalance(drill: Drill) -> None:
    client = drill.client
    assert drill.victim is not None and drill.second_index is not None
    start_node(drill.victim, timeout=300)
    names = [node.node_name for node in drill.cluster.nodes]
    health = client.cluster.health(wait_for_status="green", wait_for_nodes="3", timeout="180s")
    assert not health["timed_out"], health

    # 2 indices x 3 primaries, each with one replica: 12 copies, 4 per node once balanced.
    def balanced() -> Counter[str] | None:
        current = client.cluster.health()
        per_node = _shards_per_node(client)
        settled = current["relocating_shards"] == 0 and current["initializing_shards"] == 0
        return per_node if settled and per_node == Counter(dict.fromkeys(names, 4)) else None

    per_node = wait_until(
        balanced, timeout_s=180, what="4 shard copies on each of the 3 nodes", interval_s=1.0
    )
    health = client.cluster.health()
    assert health["status"] == "green"
    assert health["active_primary_shards"] == 2 * SHARDS
    assert health["active_shards"] == health["active_primary_shards"] * 2 == 12
    assert sum(per_node.values()) == 12
    # The returned node answers on its own, with every document.
    alone = make_client(Settings().override(elasticsearch={"url": drill.victim.url}).cluster_spec())
    try:
        assert alone.count(index=ALIAS)["count"] == SECOND_DOCS
        _search(alone, 7)
    finally:
        alone.close()
    assert cluster_status(drill.cluster)["running"] == 3
