"""SQL source against a SQLite file: the second run reads only new and updated rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pytest

from llmops_dagster.config import Settings
from llmops_dagster.sources.dlt_pipelines import make_pipeline, run_pipeline
from llmops_dagster.sources.source_config import SqlTableConfig
from llmops_dagster.sources.sql import make_sql_source

pytestmark = pytest.mark.integration


def test_incremental_on_updated_at(tmp_path: Path) -> None:
    db = tmp_path / "source.db"
    src = sqlite3.connect(db)
    src.executescript(
        """
        CREATE TABLE articles (
            article_id INTEGER PRIMARY KEY, title TEXT, body TEXT, updated_at TIMESTAMP);
        CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT);
        """
    )
    src.executemany(
        "INSERT INTO articles VALUES (?, ?, ?, ?)",
        [(i, f"T{i}", f"body {i}", f"2026-01-0{i} 00:00:00") for i in range(1, 5)],
    )
    src.executemany("INSERT INTO tags VALUES (?, ?)", [(1, "a"), (2, "b")])
    src.commit()

    settings = Settings(home=tmp_path / "home")
    pipeline = make_pipeline(settings.warehouse_target(), "sql_incremental_test")
    tables = [
        SqlTableConfig(name="articles", primary_key="article_id"),
        SqlTableConfig(name="tags", cursor=None),  # no cursor: full reload, merged on id
    ]

    def run() -> dict[str, int]:
        return run_pipeline(pipeline, make_sql_source(f"sqlite:///{db}", tables))[1]

    assert run() == {"sql_articles": 4, "sql_tags": 2}
    assert run() == {"sql_tags": 2}  # articles: nothing newer than the cursor

    src.execute(
        "UPDATE articles SET body = 'edited', updated_at = '2026-02-01 00:00:00'"
        " WHERE article_id = 2"
    )
    src.execute("INSERT INTO articles VALUES (5, 'T5', 'body 5', '2026-02-02 00:00:00')")
    src.commit()
    src.close()
    assert run() == {"sql_articles": 2, "sql_tags": 2}

    con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    try:
        rows = dict(con.execute("SELECT article_id, body FROM raw.sql_articles").fetchall())
        tags = con.execute("SELECT count(*) FROM raw.sql_tags").fetchone()
    finally:
        con.close()
    assert rows == {1: "body 1", 2: "edited", 3: "body 3", 4: "body 4", 5: "body 5"}
    assert tags == (2,)
