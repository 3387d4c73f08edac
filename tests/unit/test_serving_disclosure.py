"""Who may read what the server keeps, without a server: an answer's audience, feedback on an
answer the caller may not read, the health report (cached, no exception text, details for
operators only) and the API key file failing closed."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmops_dagster.access import Principal
from llmops_dagster.serving.answer_log import AnswerRecord, ServingStore, UnknownTrace
from llmops_dagster.serving.app import create_app
from llmops_dagster.serving.auth import KeyStore, add_key
from llmops_dagster.serving.bundles import BundleHolder, ServedBundle
from llmops_dagster.serving.disclosure import answer_audience, is_restricted, withheld
from llmops_dagster.serving.pricing import PriceTable
from llmops_dagster.serving.service import AnswerService
from llmops_dagster.serving.tracing import TraceContext

pytestmark = pytest.mark.unit

HR = Principal("hr-reader", frozenset({"hr"}))
BOTH = Principal("hr-sec", frozenset({"hr", "security"}))


# --- an answer's audience -------------------------------------------------------------------
def test_an_answers_audience_is_every_group_its_text_came_through() -> None:
    public = Principal.public()
    assert answer_audience(public, [["public"], ["public", "hr"]]) == ["public"]
    assert answer_audience(HR) == ["hr"]  # the asker alone makes it restricted
    assert answer_audience(HR, [["public"]]) == ["hr"]
    # Read through hr (the asker's group), not through every group the passage allows.
    assert answer_audience(HR, [["finance", "hr"]]) == ["hr"]
    assert answer_audience(BOTH, [["hr"], ["security"]]) == ["hr", "security"]
    # A passage the asker could not have read (the search filter prevents it): all its groups.
    assert answer_audience(public, [["finance", "legal"]]) == ["finance", "legal"]
    assert is_restricted(["hr"]) and not is_restricted(["public"]) and not is_restricted(None)
    assert withheld(["hr", "security"]) == "[withheld: audience hr,security]"
    # Reading needs every group: one of two is not enough.
    assert BOTH.can_read_all(["hr", "security"]) and not HR.can_read_all(["hr", "security"])
    assert public.can_read_all(["public"]) and public.can_read_all([])


# --- the store --------------------------------------------------------------------------------
def _record(trace_id: str, **changes: Any) -> AnswerRecord:
    values: dict[str, Any] = {
        "trace_id": trace_id,
        "question": "q?",
        "answer": "a.",
        "cited_chunk_ids": [],
        "retrieved": [],
        "bundle_uri": None,
        "bundle_version": None,
        "total_ms": 1.0,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "cost_usd": 0.0,
    }
    return AnswerRecord(**(values | changes))


def test_the_store_keeps_the_audience_and_upgrades_an_old_store(tmp_path: Path) -> None:
    path = tmp_path / "serving.db"
    # A store written before audiences were recorded: no audience column.
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE answers (trace_id TEXT PRIMARY KEY, created_at TEXT NOT NULL,"
            " bundle_uri TEXT, bundle_version TEXT, question TEXT NOT NULL, answer TEXT NOT NULL,"
            " cited_chunk_ids TEXT NOT NULL, retrieved TEXT NOT NULL, top_score REAL,"
            " no_hit INTEGER NOT NULL, total_ms REAL NOT NULL, prompt_tokens INTEGER NOT NULL,"
            " completion_tokens INTEGER NOT NULL, cost_usd REAL,"
            " asker_groups TEXT NOT NULL DEFAULT '[]');"
            "INSERT INTO answers VALUES ('tr-old', '2026-01-01', NULL, NULL, 'q', 'a', '[]', '[]',"
            " NULL, 1, 1.0, 1, 1, 0.0, '[\"hr\"]');"
        )
    store = ServingStore(path)
    store.record_answer(_record("tr-new", asker_groups=["hr"], audience=["hr", "security"]))
    store.record_answer(_record("tr-pub"))
    assert store.answer("tr-old")["audience"] == ["hr"]  # type: ignore[index]  # from its asker
    assert store.answer("tr-new")["audience"] == ["hr", "security"]  # type: ignore[index]
    assert store.audiences(["tr-old", "tr-new", "tr-pub", "tr-none"]) == {
        "tr-old": ["hr"],
        "tr-new": ["hr", "security"],
        "tr-pub": ["public"],
    }


# --- a service without models ----------------------------------------------------------------
class _Tracer:
    started = 0
    dropped = 0

    def close(self) -> None:
        pass


class _Assessments:
    failed = 0

    def __init__(self) -> None:
        self.submitted: list[tuple[str, list[str] | None]] = []

    def submit(self, record: Any, audience: list[str] | None = None) -> None:
        self.submitted.append((record.trace_id, audience))

    def drain(self, timeout_s: float = 0) -> None:
        pass

    def close(self) -> None:
        pass


def _served(_: Any) -> ServedBundle:
    return ServedBundle(None, None, TraceContext("", "", "", "", "a", "", "e"), local=True)


def _service(tmp_path: Path, checks: dict[str, Any] | None = None, **kwargs: Any) -> AnswerService:
    holder = BundleHolder(lambda: None, _served)
    holder.refresh()
    return AnswerService(
        holder=holder,
        tracer=_Tracer(),  # type: ignore[arg-type]
        store=ServingStore(tmp_path / "serving.db"),
        prices=PriceTable.load(None),
        assessments=_Assessments(),  # type: ignore[arg-type]
        health_checks=checks,
        **kwargs,
    )


def test_feedback_on_an_answer_the_caller_may_not_read_is_an_unknown_trace(
    tmp_path: Path,
) -> None:
    """As if it did not exist (the HTTP layer's 404): a trace id must not reveal that a
    confidential answer was given."""
    service = _service(tmp_path)
    service.store.record_answer(_record("tr-hr", asker_groups=["hr"], audience=["hr"]))
    service.store.record_answer(_record("tr-pub", audience=["public"]))
    for outsider in (None, Principal("ana", frozenset()), Principal("sec", frozenset({"sec"}))):
        with pytest.raises(UnknownTrace):
            service.feedback("tr-hr", rating="down", correction="68,500", principal=outsider)
    assert service.store.feedback_for("tr-hr") == []
    _, change = service.feedback("tr-hr", rating="down", user="hr-reader", principal=HR)
    assert change == "created"
    service.feedback("tr-pub", rating="up", user="ana", principal=Principal.public())
    assert service.assessments.submitted == [("tr-hr", ["hr"]), ("tr-pub", ["public"])]  # type: ignore[attr-defined]


# --- health -----------------------------------------------------------------------------------
def test_a_flood_of_health_probes_runs_the_checks_once_per_ttl(tmp_path: Path) -> None:
    calls = {"elasticsearch": 0, "tracking_store": 0}

    def check(name: str) -> Any:
        def run() -> str:
            calls[name] += 1
            time.sleep(0.05)  # a real check takes a while: concurrent probes overlap it
            return "fine"

        return run

    service = _service(tmp_path, {n: check(n) for n in calls}, health_ttl_s=0.5)
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(service.health()[0])) for _ in range(40)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 40
    assert calls == {"elasticsearch": 1, "tracking_store": 1} and service.health_runs == 1
    time.sleep(0.6)
    service.health()
    assert calls == {"elasticsearch": 2, "tracking_store": 2} and service.health_runs == 2


def test_the_health_report_names_the_kind_of_failure_never_its_message(tmp_path: Path) -> None:
    def broken() -> str:
        raise ConnectionError("http://elastic:s3cret@es.internal:9200 refused")

    service = _service(tmp_path, {"elasticsearch": broken, "tracking_store": lambda: "ok"})
    service.holder.last_error = "MlflowException: http://svc:pw123@mlflow/ down"
    service.holder.last_error_kind = "MlflowException"
    ok, report = service.health()
    assert ok is False
    assert report["elasticsearch"] == {"ok": False, "error": "ConnectionError"}
    assert report["tracking_store"] == {"ok": True, "detail": "ok"}
    assert report["bundle"]["last_refresh_error"] == "MlflowException"
    text = json.dumps(report)
    assert "s3cret" not in text and "pw123" not in text and "es.internal" not in text


def test_healthz_is_up_or_down_for_anyone_and_the_report_for_operators(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    ana = add_key(keys, "ana", [])[1]
    ops = add_key(keys, "ops-bot", ["ops"])[1]
    state = {"up": True}

    def es() -> str:
        if not state["up"]:
            raise ConnectionError("http://elastic:s3cret@es:9200 refused")
        return "green (1 nodes)"

    service = _service(tmp_path, {"elasticsearch": es}, health_ttl_s=0.0)
    with TestClient(create_app(service, KeyStore(keys))) as http:
        for headers in ({}, {"Authorization": f"Bearer {ana}"}, {"X-API-Key": "llmk_wrong"}):
            response = http.get("/healthz", headers=headers)
            assert (response.status_code, response.json()) == (200, {"ok": True}), headers
        report = http.get("/healthz", headers={"Authorization": f"Bearer {ops}"}).json()
        assert report["elasticsearch"] == {"ok": True, "detail": "green (1 nodes)"}
        assert report["bundle"]["ok"] is True and report["traces"] == {"started": 0, "dropped": 0}

        state["up"] = False
        down = http.get("/healthz")
        assert (down.status_code, down.json()) == (503, {"ok": False})
        detail = http.get("/healthz", headers={"X-API-Key": ops})
        assert detail.status_code == 503
        assert detail.json()["elasticsearch"] == {"ok": False, "error": "ConnectionError"}
        assert "s3cret" not in detail.text


def test_healthz_without_key_authentication_gives_up_or_down_only(tmp_path: Path) -> None:
    """No keys: every caller is anonymous, none is known to be an operator."""
    service = _service(tmp_path, {"elasticsearch": lambda: "green"})
    with TestClient(create_app(service)) as http:
        assert http.get("/healthz").json() == {"ok": True}


# --- the key file fails closed ---------------------------------------------------------------
def test_a_deleted_or_broken_key_file_rejects_every_key_until_it_is_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, "ana", ["hr"])[1]
    good = path.read_text()
    store = KeyStore(path)
    assert store.authenticate(key) is not None

    path.unlink()
    assert store.authenticate(key) is None  # not the last good keys
    assert store.failure is not None and "FileNotFoundError" in store.failure
    path.write_text(good)
    assert store.authenticate(key) is not None and store.failure is None

    for broken in ('{"keys": [{"name": "ana"}]}', "{not json", '{"keys": [{"name": "x",'):
        path.write_text(broken)
        assert store.authenticate(key) is None, broken
    path.write_text(good)
    found = store.authenticate(key)
    assert found is not None and found.principal() == Principal("ana", frozenset({"hr"}))
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors and all("rejecting every key" in r.getMessage() for r in errors)
