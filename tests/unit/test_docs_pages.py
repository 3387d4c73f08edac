"""The pages under docs/ that quote the code say what the code has: docs/serving.md's routes and
request fields are the app's, docs/operations.md's jobs, schedules and sensors are the code
location's, docs/CONTRACTS.md's field lists are the rows', the chunk table's and the index
mapping's."""

from __future__ import annotations

import re
from types import SimpleNamespace

import duckdb
import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.unit


def _table_rows(page: str, heading: str) -> list[list[str]]:
    """The cells of each body row of the first table under the ``## `` heading ``heading``."""
    text = (PROJECT_ROOT / "docs" / page).read_text()
    section = re.split(r"\n## ", text.split(f"{heading}\n", 1)[1], maxsplit=1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[2:]  # without the header and its rule


def documented_routes() -> dict[tuple[str, str], set[str] | None]:
    """(method, path) → request fields (``name?`` for optional ones), None for no body."""
    routes = {}
    for route, request, _ in _table_rows("serving.md", "## Routes"):
        method, path = route.strip("`").split()
        fields = re.fullmatch(r"`\{(.*)\}`", request)
        routes[(method, path)] = {f.strip() for f in fields.group(1).split(",")} if fields else None
    return routes


def app_routes() -> dict[tuple[str, str], set[str] | None]:
    """The same, read from the FastAPI app and its pydantic request models."""
    from fastapi.routing import APIRoute

    from llmops_dagster.serving.app import create_app

    # Registering routes reads only `service.metrics`; no request is made, so a stand-in
    # object is enough (building a real AnswerService needs Elasticsearch and MLflow).
    app = create_app(SimpleNamespace(metrics=None, close=lambda: None))  # type: ignore[arg-type]
    routes = {}
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        body = route.dependant.body_params
        fields = None
        if body:
            model = body[0].field_info.annotation
            fields = {
                name if field.is_required() else f"{name}?"
                for name, field in model.model_fields.items()
            }
        for method in route.methods:
            routes[(method, route.path)] = fields
    return routes


def test_serving_page_routes_are_the_apps() -> None:
    documented = documented_routes()
    assert ("POST", "/v1/answer") in documented
    assert documented == app_routes()


def _operations_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {"job": set(), "schedule": set(), "sensor": set()}
    for kind, name, _ in _table_rows("operations.md", "## Jobs, schedules, sensors"):
        names[kind].add(name.strip("`"))
    return names


def test_operations_page_names_the_code_locations_jobs_schedules_and_sensors() -> None:
    from llmops_dagster.definitions import defs

    in_code = {
        "job": {job.name for job in defs.jobs or []},
        "schedule": {schedule.name for schedule in defs.schedules or []},
        "sensor": {sensor.name for sensor in defs.sensors or []},
    }
    assert _operations_names() == in_code


def test_contracts_document_and_rejection_rows_are_the_dataclasses() -> None:
    from llmops_dagster.documents.rows import DOCUMENT_FIELDS, REJECTED_FIELDS, RejectReason

    document = _table_rows("CONTRACTS.md", "## Document (row of `llmops.documents`)")
    assert [row[0] for row in document] == list(DOCUMENT_FIELDS)
    rejected = _table_rows("CONTRACTS.md", "## Rejected input (row of `llmops.rejected_documents`)")
    assert [row[0] for row in rejected] == list(REJECTED_FIELDS)
    text = (PROJECT_ROOT / "docs" / "CONTRACTS.md").read_text()
    reasons = text.split("Reasons:", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"`(\w+)`", reasons) == [reason.value for reason in RejectReason]


def test_contracts_chunk_rows_are_the_chunk_tables_columns() -> None:
    from llmops_dagster.chunks.chunk_table import ensure_tables

    con = duckdb.connect(":memory:")
    ensure_tables(con)
    columns = [row[0] for row in con.execute("DESCRIBE llmops.chunks").fetchall()]
    chunk = _table_rows("CONTRACTS.md", "## Chunk (row of `llmops.chunks`)")
    assert [row[0] for row in chunk] == columns


def test_contracts_index_fields_are_the_mappings() -> None:
    from llmops_dagster.search.mapping import AnalyzerChoice, IndexSpec, build_index_body

    body = build_index_body(
        IndexSpec(dims=384, model_id="m", stemming="analyzer"), analyzer=AnalyzerChoice("english")
    )
    mapped = {name: spec["type"] for name, spec in body["mappings"]["properties"].items()}
    heading = "## Elasticsearch document (one per chunk, `_id` = chunk_id)"
    assert {row[0]: row[1] for row in _table_rows("CONTRACTS.md", heading)} == mapped
