"""The MLflow store helpers: one client constructor (tracking and registry in the same store)
and the HTTP health probe (httpx) that fails fast naming the setting."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from llmops_dagster.tracking.mlflow_store import MlflowUnavailable, _check_http, mlflow_client

pytestmark = pytest.mark.unit


def test_the_client_registers_where_it_tracks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process with another registry URI in its environment still registers bundles in the
    store it tracks runs in (a REST URI: building the client connects to nothing)."""
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:////tmp/elsewhere.db")
    client = mlflow_client("http://127.0.0.1:9")
    assert client.tracking_uri == "http://127.0.0.1:9"
    assert client._registry_uri == "http://127.0.0.1:9"


@pytest.fixture
def health_server() -> Iterator[tuple[str, list[int]]]:
    """A loopback server whose ``/health`` answers the status at the head of the list."""
    statuses = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses[0] if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", statuses
    finally:
        server.shutdown()
        server.server_close()


def test_a_healthy_server_passes_and_an_unhealthy_one_names_the_setting(
    health_server: tuple[str, list[int]],
) -> None:
    url, statuses = health_server
    _check_http(url + "/")
    statuses[0] = 503
    with pytest.raises(MlflowUnavailable, match=rf"MLFLOW_TRACKING_URI={url} is not reachable"):
        _check_http(url)


def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(MlflowUnavailable, match="unset MLFLOW_TRACKING_URI"):
        _check_http("http://127.0.0.1:9")
