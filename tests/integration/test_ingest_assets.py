"""REST API and SQL sources as Dagster assets: keys by source, incremental, into documents."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_assets, build_resources
from llmops_dagster.sources.source_config import (
    RestApiSourceConfig,
    SourcesConfig,
    SqlSourceConfig,
    SqlTableConfig,
)
from tests.conftest import asset_metadata
from tests.integration.test_sources_rest_api import TOKEN, FakeApi, api, write_config

pytestmark = pytest.mark.integration
__all__ = ["api"]  # the fixture, imported for this module


@pytest.fixture
def sql_db(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "source.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE faq (id INTEGER PRIMARY KEY, title TEXT, body TEXT, updated_at TIMESTAMP)"
    )
    con.executemany(
        "INSERT INTO faq VALUES (?, ?, ?, ?)",
        [(i, f"Q{i}", f"answer number {i}", f"2026-02-0{i} 00:00:00") for i in range(1, 4)],
    )
    con.commit()
    con.close()
    yield db


def test_rest_and_sql_sources_materialize_into_documents(
    api: tuple[FakeApi, str],
    sql_db: Path,
    tmp_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, base_url = api
    monkeypatch.setenv("TEST_KB_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_SOURCE_DB", f"sqlite:///{sql_db}")
    sources = SourcesConfig(
        rest_api=RestApiSourceConfig(config_path=write_config(tmp_path / "api.yaml", base_url)),
        sql=SqlSourceConfig(url_env="TEST_SOURCE_DB", tables=[SqlTableConfig(name="faq")]),
    )
    assets = build_assets(tmp_settings, sources)
    keys = {k.to_user_string() for a in assets for k in a.keys}
    assert {"api/articles", "sql/faq", "documents"} <= keys
    assert "fs/files" not in keys

    def run() -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            assets,
            selection=dg.AssetSelection.groups("ingest") | dg.AssetSelection.assets("documents"),
            resources=build_resources(tmp_settings),
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
        return result

    first = run()
    docs = asset_metadata(first, "documents")
    assert docs["new"] == 5 + 3 and docs["rejected"] == 0
    assert asset_metadata(first, "api/articles")["mlflow_run_id"]
    assert asset_metadata(first, "sql/faq")["rows_loaded"] == 3

    # Nothing changed at the sources: nothing new reaches the documents table.
    second = run()
    assert asset_metadata(second, "documents")["new"] == 0
    assert asset_metadata(second, "documents")["changed"] == 0

    con = sqlite3.connect(sql_db)
    con.execute("UPDATE faq SET body = 'a better answer', updated_at = '2026-03-01' WHERE id = 2")
    con.commit()
    con.close()
    third = run()
    assert asset_metadata(third, "sql/faq")["rows_loaded"] == 1
    assert asset_metadata(third, "documents")["changed"] == 1
