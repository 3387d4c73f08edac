from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

import pytest

from llmops_dagster.config import Settings
from llmops_dagster.services import elasticsearch_local as es_local
from llmops_dagster.services import es_cluster
from llmops_dagster.services.java import JavaNotFound, find_java_home, java_major

pytestmark = pytest.mark.unit


def _fake_jdk(root: Path, version: str) -> Path:
    home = root / f"jdk-{version}"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\nexit 0\n")
    (home / "bin" / "java").chmod(0o755)
    (home / "release").write_text(f'JAVA_VERSION="{version}"\n')
    return home


def test_java_major_reads_release_file(tmp_path: Path) -> None:
    assert java_major(_fake_jdk(tmp_path, "25.0.1")) == 25
    assert java_major(_fake_jdk(tmp_path, "17.0.15")) == 17
    assert java_major(tmp_path / "nothing") is None


def test_es_java_home_too_old_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ES_JAVA_HOME", str(_fake_jdk(tmp_path, "17.0.15")))
    with pytest.raises(JavaNotFound, match=r"Java 17; Elasticsearch 9 needs Java 21\+"):
        find_java_home(Settings().local_node.java_home)


def test_es_java_home_not_a_jdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ES_JAVA_HOME", str(tmp_path))
    with pytest.raises(JavaNotFound, match="not a JDK"):
        find_java_home(Settings().local_node.java_home)


def test_no_java_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ES_JAVA_HOME", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    _fake_jdk(tmp_path, "17.0.2")
    monkeypatch.setattr("llmops_dagster.services.java.JVM_ROOTS", (tmp_path,))
    with pytest.raises(JavaNotFound, match="ES_JAVA_HOME"):
        find_java_home()


def test_newest_jdk_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ES_JAVA_HOME", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    _fake_jdk(tmp_path, "21.0.4")
    newest = _fake_jdk(tmp_path, "25.0.1")
    _fake_jdk(tmp_path, "17.0.2")
    monkeypatch.setattr("llmops_dagster.services.java.JVM_ROOTS", (tmp_path,))
    assert find_java_home() == (newest, 25)


def test_java_home_setting_is_a_candidate_beside_the_jvm_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ES_JAVA_HOME", raising=False)
    elsewhere = _fake_jdk(tmp_path / "opt", "25.0.1")
    monkeypatch.setenv("JAVA_HOME", str(elsewhere))
    _fake_jdk(tmp_path / "jvm", "21.0.4")
    monkeypatch.setattr("llmops_dagster.services.java.JVM_ROOTS", (tmp_path / "jvm",))
    local_node = Settings().local_node
    assert local_node.default_java_home == elsewhere
    assert find_java_home(local_node.java_home, fallback=local_node.default_java_home) == (
        elsewhere,
        25,
    )
    # JAVA_HOME is a candidate, not a requirement: an old one loses to a newer JDK found.
    old = _fake_jdk(tmp_path / "old", "17.0.2")
    assert find_java_home(fallback=old) == (tmp_path / "jvm" / "jdk-21.0.4", 21)


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn on it
    with pytest.raises(es_local.ElasticsearchSetupError, match=r"Maven .*not on PATH"):
        es_local.fetch_distribution(tmp_path / "dist", "9.5.0")


def test_node_config_is_local_single_node_without_security(tmp_path: Path) -> None:
    node = es_local.LocalNode(dist_home=tmp_path, node_dir=tmp_path / "node", port=9333)
    yml = es_local._elasticsearch_yml(node)
    assert 'network.host: "127.0.0.1"' in yml
    assert "http.port: 9333" in yml
    assert "transport.port: 9433" in yml
    assert 'discovery.type: "single-node"' in yml
    assert "xpack.security.enabled: false" in yml
    assert "cluster.routing.allocation.disk.threshold_enabled: false" in yml


def test_status_of_a_node_that_never_ran(tmp_path: Path) -> None:
    node = es_local.LocalNode(dist_home=tmp_path, node_dir=tmp_path / "node", port=1)
    status = es_local.node_status(node)
    assert status == {
        "url": "http://127.0.0.1:1",
        "pid": None,
        "running": False,
        "healthy": False,
        "status": None,
        "node_dir": str(tmp_path / "node"),
    }
    assert es_local.stop_node(node) is False


def test_root_runs_nodes_of_private_checkouts_from_var_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmops_dagster.services.local import _relocated_for_es_user

    private = tmp_path / "private"  # pytest's tmp folders are 0700 for root
    private.mkdir(mode=0o700)
    public = Path(tempfile.mkdtemp(dir="/var/tmp"))  # /var/tmp is 1777: reachable by anyone
    public.chmod(0o755)
    monkeypatch.setattr("os.geteuid", lambda: 0)

    inside = es_local.LocalNode(dist_home=private / "dist", node_dir=private / "node", port=1)
    moved = _relocated_for_es_user(inside)
    assert moved.node_dir.parent == Path("/var/tmp/llmops-elasticsearch/nodes")
    assert moved.dist_home == Path("/var/tmp/llmops-elasticsearch/dist/dist")
    assert _relocated_for_es_user(inside) == moved  # deterministic: status/stop find it again

    reachable = es_local.LocalNode(dist_home=public / "dist", node_dir=public / "node", port=1)
    assert _relocated_for_es_user(reachable) == reachable
    public.rmdir()

    monkeypatch.setattr("os.geteuid", lambda: 1000)  # not root: the node runs as ourselves
    assert _relocated_for_es_user(inside) == inside


# --- a local cluster of N nodes (issue 16) ---------------------------------------------------


def _three_nodes(tmp_path: Path, port: int = 9401) -> es_cluster.LocalCluster:
    return es_cluster.cluster_nodes(tmp_path / "dist", tmp_path / "cluster", size=3, port=port)


def test_cluster_nodes_get_own_folders_ports_and_shared_discovery(tmp_path: Path) -> None:
    cluster = _three_nodes(tmp_path)
    assert [n.node_dir for n in cluster.nodes] == [
        tmp_path / "cluster" / f"node-{i}" for i in (1, 2, 3)
    ]
    assert [(n.port, n.transport_port) for n in cluster.nodes] == [
        (9401, 9501), (9402, 9502), (9403, 9503),
    ]  # fmt: skip
    assert cluster.url == "http://127.0.0.1:9401,http://127.0.0.1:9402,http://127.0.0.1:9403"
    yml = es_local._elasticsearch_yml(cluster.nodes[1])
    assert 'cluster.name: "llmops-cluster"' in yml
    assert 'node.name: "llmops-node-2"' in yml
    assert "http.port: 9402\n" in yml
    assert "transport.port: 9502\n" in yml
    assert 'discovery.seed_hosts: ["127.0.0.1:9501", "127.0.0.1:9502", "127.0.0.1:9503"]' in yml
    assert (
        'cluster.initial_master_nodes: ["llmops-node-1", "llmops-node-2", "llmops-node-3"]' in yml
    )
    assert "discovery.type" not in yml  # single-node discovery would refuse the peers


def test_cluster_size_and_port_range_are_checked(tmp_path: Path) -> None:
    with pytest.raises(es_local.ElasticsearchSetupError, match="at least 1 node, got 0"):
        es_cluster.cluster_nodes(tmp_path, tmp_path, size=0, port=9200)
    with pytest.raises(es_local.ElasticsearchSetupError, match="LLMOPS_ES_PORT"):
        es_cluster.cluster_nodes(tmp_path, tmp_path, size=3, port=65434)


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _listening_socket_after_free_ports() -> socket.socket:
    """A listening socket on port p whose node-1 neighbours (p - 1 and its transport port
    p + 99) are free: another process holding one of those would be reported first."""
    for _ in range(50):
        sock = _listening_socket()
        port = sock.getsockname()[1]
        if not es_local.port_in_use(port - 1) and not es_local.port_in_use(port + 99):
            return sock
        sock.close()
    raise AssertionError("no free port pair found in 50 tries")


def test_a_taken_port_is_a_clear_error_before_any_node_starts(tmp_path: Path) -> None:
    with _listening_socket_after_free_ports() as taken:
        port = taken.getsockname()[1]
        cluster = es_cluster.cluster_nodes(tmp_path / "dist", tmp_path, size=2, port=port - 1)
        with pytest.raises(
            es_local.ElasticsearchSetupError,
            match=rf"Port {port} on 127.0.0.1 \(HTTP port of Elasticsearch node llmops-node-2\) "
            r"is already in use.*LLMOPS_ES_PORT",
        ):
            es_cluster.start_cluster(cluster)
    assert not (tmp_path / "node-1").exists()  # nothing was prepared, nothing launched


def test_a_taken_transport_port_names_it(tmp_path: Path) -> None:
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        node = es_local.LocalNode(dist_home=tmp_path, node_dir=tmp_path / "n", port=port - 100)
        with pytest.raises(es_local.ElasticsearchSetupError, match=rf"Port {port} .*transport"):
            es_local.check_ports_free(node)
    assert es_local.port_in_use(port) is False  # closed again: free


def test_cli_refuses_fewer_than_one_node() -> None:
    from click.testing import CliRunner

    from llmops_dagster.cli import main

    result = CliRunner().invoke(main, ["services", "up", "--nodes", "0"])
    assert result.exit_code == 2
    assert "Invalid value for '--nodes'" in result.output
    assert "0 is not in the range x>=1" in result.output


def test_nodes_with_an_external_cluster_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops_dagster.services.local import elasticsearch_up

    monkeypatch.setenv("ELASTICSEARCH_URL", "http://es.example.internal:9200")
    with pytest.raises(es_local.ElasticsearchSetupError, match="unset it to start a local"):
        elasticsearch_up(Settings(), log=print, nodes=3)


def test_recorded_cluster_drives_status_and_down(tmp_path: Path) -> None:
    from llmops_dagster.services import local

    settings = Settings().override(home=tmp_path, elasticsearch={"url": None})
    assert local.recorded_cluster(settings) is None
    cluster = local.local_cluster(settings, nodes=3, port=9411)
    local._record_cluster(settings, cluster)
    assert local.recorded_cluster(settings) == cluster  # same nodes, even relocated for root

    status = local._elasticsearch_status(settings)
    assert (status["size"], status["running"], status["healthy"]) == (3, 0, False)
    assert status["url"] == cluster.url
    assert "0 of the 3 local cluster nodes run" in status["error"]
    assert "services up --nodes 3" in status["error"]

    assert local.elasticsearch_down(settings, log=print) is False  # nothing ran
    assert local.recorded_cluster(settings) is None  # down forgets the cluster, keeps its data


def test_cluster_spec_takes_several_node_urls() -> None:
    from llmops_dagster.search.client import ClusterSpec, ElasticsearchUnavailable, make_client

    spec = ClusterSpec(url="http://127.0.0.1:9271/, http://127.0.0.1:9272,http://127.0.0.1:9273")
    assert spec.urls == ["http://127.0.0.1:9271", "http://127.0.0.1:9272", "http://127.0.0.1:9273"]
    client = make_client(spec)  # nothing is sent
    assert len(client.transport.node_pool.all()) == 3
    with pytest.raises(ElasticsearchUnavailable, match=r"not a list of http.*ELASTICSEARCH_URL"):
        make_client(ClusterSpec(url="127.0.0.1:9200", hint="check ELASTICSEARCH_URL"))


def test_failover_drill_counts_failures_and_the_window() -> None:
    state = {"down": False, "failed": 0}

    def search(i: int) -> None:
        # Exactly three searches fail while the "node" is down; the rest answer.
        if state["down"] and state["failed"] < 3:
            state["failed"] += 1
            raise ConnectionError(f"search {i}: node gone")

    def disrupt() -> None:
        state["down"] = True
        deadline = time.monotonic() + 30
        while state["failed"] < 3 and time.monotonic() < deadline:
            time.sleep(0.001)

    def settle() -> None:
        state["down"] = False

    report = es_cluster.measure_failover(
        search, disrupt, settle, searches=40, disrupt_after=10, min_after_settled=5,
        interval_s=0.0,
    )  # fmt: skip
    summary = report.summary()
    assert summary["failed"] == 3
    assert summary["failed_after_settled"] == 0
    assert summary["searches_after_settled"] >= 5
    assert report.total >= 40
    first = report.failures[0].index  # 10, or 11 when search 10 ran before the flag was set
    assert first >= 10
    assert [o.index for o in report.failures] == [first, first + 1, first + 2]
    assert report.failures[0].started_s <= report.failures[-1].ended_s
    assert summary["failover_window_s"] == round(
        report.failures[-1].ended_s - report.failures[0].started_s, 3
    )
    assert summary["first_errors"][0] == f"ConnectionError: search {first}: node gone"


def test_failover_drill_stops_its_load_when_the_disruption_fails() -> None:
    def disrupt() -> None:
        raise RuntimeError("could not stop the node")

    with pytest.raises(RuntimeError, match="could not stop the node"):
        es_cluster.measure_failover(
            lambda i: None, disrupt, lambda: None, searches=10, disrupt_after=2,
            max_seconds=600,
        )  # fmt: skip
