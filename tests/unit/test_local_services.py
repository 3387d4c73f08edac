from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from llmops_dagster.config import Settings
from llmops_dagster.services import elasticsearch_local as es_local
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
