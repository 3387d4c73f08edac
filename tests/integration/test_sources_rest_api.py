"""REST API source against a local paginated server: the second run asks for and loads only
records newer than the cursor, and the bearer token comes from the environment."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import duckdb
import pytest
import yaml

from llmops_dagster.config import Settings
from llmops_dagster.sources.dlt_pipelines import make_pipeline, run_pipeline
from llmops_dagster.sources.rest_api import make_rest_api_source

pytestmark = pytest.mark.integration

TOKEN = "test-token-123"
PAGE_SIZE = 2


class FakeApi:
    """Articles with ``updated_at``; honours ``updated_since`` and ``page`` like real APIs."""

    def __init__(self) -> None:
        self.articles: dict[int, dict[str, Any]] = {
            i: {
                "id": i,
                "title": f"Article {i}",
                "body": f"Body of article {i}",
                "updated_at": f"2026-01-{i:02d}T00:00:00Z",
            }
            for i in range(1, 6)
        }
        self.requests: list[dict[str, list[str]]] = []
        self.unauthorized = 0

    def page(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        since = query.get("updated_since", [""])[0]
        page = int(query.get("page", ["1"])[0])
        matching = sorted(
            (a for a in self.articles.values() if a["updated_at"] >= since),
            key=lambda a: (a["updated_at"], a["id"]),
        )
        return matching[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]


@pytest.fixture
def api() -> Iterator[tuple[FakeApi, str]]:
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                fake.unauthorized += 1
                self.send_response(401)
                self.end_headers()
                return
            if url.path != "/v1/articles":
                self.send_response(404)
                self.end_headers()
                return
            query = parse_qs(url.query)
            fake.requests.append(query)
            body = json.dumps({"data": fake.page(query)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}/v1/"
    finally:
        server.shutdown()
        server.server_close()


def write_config(path: Path, base_url: str) -> Path:
    config = {
        "name": "kb",
        "client": {
            "base_url": base_url,
            "auth": {"type": "bearer", "token_env": "TEST_KB_TOKEN"},
            "paginator": {
                "type": "page_number",
                "page_param": "page",
                "base_page": 1,
                "total_path": None,
            },
        },
        "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
        "resources": [
            {
                "name": "articles",
                "endpoint": {
                    "path": "articles",
                    "data_selector": "data",
                    "incremental": {
                        "start_param": "updated_since",
                        "cursor_path": "updated_at",
                        "initial_value": "2000-01-01T00:00:00Z",
                    },
                },
                "records": {"title_field": "title", "text_fields": ["title", "body"]},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_paginated_incremental_load(
    api: tuple[FakeApi, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, base_url = api
    monkeypatch.setenv("TEST_KB_TOKEN", TOKEN)
    config_path = write_config(tmp_path / "api.yaml", base_url)
    settings = Settings(home=tmp_path / "home")
    pipeline = make_pipeline(settings.warehouse_target(), "api_incremental_test")

    def run() -> dict[str, int]:
        return run_pipeline(pipeline, make_rest_api_source(config_path))[1]

    assert run() == {"api_articles": 5}
    assert fake.unauthorized == 0
    # 5 records at 2 per page: pages 1..3 have data, page 4 is empty and stops the paginator.
    assert [q["page"] for q in fake.requests] == [["1"], ["2"], ["3"], ["4"]]
    assert fake.requests[0]["updated_since"] == ["2000-01-01T00:00:00Z"]

    fake.requests.clear()
    assert run() == {}  # nothing newer: the record at the cursor is de-duplicated
    assert fake.requests[0]["updated_since"] == ["2026-01-05T00:00:00Z"]

    fake.articles[6] = {
        "id": 6,
        "title": "New",
        "body": "fresh",
        "updated_at": "2026-02-01T00:00:00Z",
    }
    fake.articles[2] = {**fake.articles[2], "body": "edited", "updated_at": "2026-02-02T00:00:00Z"}
    assert run() == {"api_articles": 2}

    con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    try:
        rows = con.execute("SELECT id, body FROM raw.api_articles ORDER BY id").fetchall()
    finally:
        con.close()
    assert len(rows) == 6  # merged on id: the edit replaced article 2
    assert dict(rows)[2] == "edited"


def test_missing_token_fails_before_any_request(
    api: tuple[FakeApi, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, base_url = api
    monkeypatch.delenv("TEST_KB_TOKEN", raising=False)
    config_path = write_config(tmp_path / "api.yaml", base_url)
    with pytest.raises(ValueError, match="TEST_KB_TOKEN"):
        make_rest_api_source(config_path)
    assert fake.requests == [] and fake.unauthorized == 0
