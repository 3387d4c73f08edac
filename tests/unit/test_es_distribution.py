"""The local node's distribution and health probe: unpacking publishes a whole tree or nothing
(permissions kept, no staging left over), and the probe reads health, a secured node and a
node that is not there (httpx)."""

from __future__ import annotations

import json
import os
import stat
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from llmops_dagster.services import elasticsearch_local as es_local

pytestmark = pytest.mark.unit

VERSION = "9.5.0"


def _zip(dist_dir: Path, members: dict[str, tuple[str, int]]) -> Path:
    """A fake distribution zip in the download folder (what ``mvn dependency:copy`` leaves)."""
    path = dist_dir / "download" / f"elasticsearch-{VERSION}.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, (text, mode) in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(info, text)
    return path


@pytest.fixture
def maven(monkeypatch: pytest.MonkeyPatch) -> None:
    # The zip is already downloaded: mvn must be found but is never run.
    monkeypatch.setattr(es_local.shutil, "which", lambda name: f"/usr/bin/{name}")


def test_the_distribution_is_unpacked_into_its_home_with_permissions(
    tmp_path: Path, maven: None
) -> None:
    top = f"elasticsearch-{VERSION}"
    _zip(
        tmp_path,
        {
            f"{top}/bin/elasticsearch": ("#!/bin/sh\n", 0o755),
            f"{top}/config/elasticsearch.yml": ("", 0o644),
        },
    )
    home = es_local.fetch_distribution(tmp_path, VERSION)
    assert home == tmp_path / top
    assert os.access(home / "bin" / "elasticsearch", os.X_OK)
    assert (home / "config" / "elasticsearch.yml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download", top]  # no staging left
    assert es_local.fetch_distribution(tmp_path, VERSION) == home  # once


def test_a_zip_without_the_launcher_publishes_nothing(tmp_path: Path, maven: None) -> None:
    _zip(tmp_path, {"something-else/README": ("", 0o644)})
    with pytest.raises(es_local.ElasticsearchSetupError, match=r"does not contain .*/bin"):
        es_local.fetch_distribution(tmp_path, VERSION)
    assert [p.name for p in tmp_path.iterdir()] == ["download"]


@pytest.fixture
def node_http() -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
    replies = [(200, b"{}")]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = replies[0]
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", replies
    finally:
        server.shutdown()
        server.server_close()


def test_cluster_health_reads_health_a_secured_node_and_errors(
    node_http: tuple[str, list[tuple[int, bytes]]],
) -> None:
    url, replies = node_http
    replies[0] = (200, json.dumps({"status": "yellow", "number_of_nodes": 1}).encode())
    assert es_local.cluster_health(url) == {"status": "yellow", "number_of_nodes": 1}
    replies[0] = (401, b"")
    assert es_local.cluster_health(url) == {"status": "secured"}
    replies[0] = (503, b"{}")
    assert es_local.cluster_health(url) is None
    replies[0] = (200, b"not json")
    assert es_local.cluster_health(url) is None
    assert es_local.cluster_health("http://127.0.0.1:9", timeout=1) is None
