"""Registry diff: exactly one event per change, including the first tick."""

from __future__ import annotations

import json

import pytest

from llmops_dagster.evaluate.registry_watch import diff_snapshots

pytestmark = pytest.mark.unit


def snap(versions: list[str], aliases: dict[str, str] | None = None) -> dict[str, object]:
    return {"model": "rag-generator", "versions": versions, "aliases": aliases or {}}


def test_first_tick_on_empty_registry_then_one_event_per_new_version() -> None:
    events, cursor = diff_snapshots(None, snap([]))
    assert events == []
    events, cursor = diff_snapshots(cursor, snap(["1"]))
    assert [(e.kind, e.version) for e in events] == [("new_version", "1")]
    assert events[0].run_key == "rag-generator/v1"
    again, cursor2 = diff_snapshots(cursor, snap(["1"]))
    assert again == [] and json.loads(cursor2) == json.loads(cursor)


def test_first_tick_policies_and_existing_aliases_are_baseline() -> None:
    existing = snap(["1", "2", "10"], {"candidate": "2"})
    latest, cursor = diff_snapshots(None, existing)
    assert [e.version for e in latest] == ["10"]  # numeric, not string, order
    assert [e.version for e in diff_snapshots(None, existing, first_tick="all")[0]] == [
        "1",
        "2",
        "10",
    ]
    assert diff_snapshots(None, existing, first_tick="none")[0] == []
    assert diff_snapshots(cursor, existing)[0] == []


def test_alias_changes_each_emit_once_with_distinct_run_keys() -> None:
    _, cursor = diff_snapshots(None, snap(["1", "2"], {"candidate": "1"}))
    keys = []
    for target in ["2", "1", "2"]:
        events, cursor = diff_snapshots(cursor, snap(["1", "2"], {"candidate": target}))
        assert [(e.kind, e.alias, e.version) for e in events] == [
            ("alias_moved", "candidate", target)
        ]
        keys.append(events[0].run_key)
        assert diff_snapshots(cursor, snap(["1", "2"], {"candidate": target}))[0] == []
    assert len(set(keys)) == 3
    assert events[0].previous_version == "1"


def test_new_alias_and_new_version_in_one_tick() -> None:
    _, cursor = diff_snapshots(None, snap(["1"]))
    events, _ = diff_snapshots(cursor, snap(["1", "2"], {"challenger": "2"}))
    assert [(e.kind, e.version) for e in events] == [("new_version", "2"), ("alias_moved", "2")]
    assert "moved to 2" in events[1].describe()


def test_champion_moves_are_tracked_but_silent_by_default() -> None:
    _, cursor = diff_snapshots(None, snap(["1"]))
    events, cursor = diff_snapshots(cursor, snap(["1"], {"champion": "1"}))
    assert events == []
    assert json.loads(cursor)["aliases"] == {"champion": "1"}
    events, _ = diff_snapshots(cursor, snap(["1", "2"], {"champion": "2"}), ignore_aliases=())
    assert [e.kind for e in events] == ["new_version", "alias_moved"]


def test_removed_alias_recreated_gets_a_fresh_key() -> None:
    _, c0 = diff_snapshots(None, snap(["1"]))
    first, c1 = diff_snapshots(c0, snap(["1"], {"candidate": "1"}))
    _, c2 = diff_snapshots(c1, snap(["1"]))  # alias removed: no event
    again, _ = diff_snapshots(c2, snap(["1"], {"candidate": "1"}))
    assert len(first) == len(again) == 1 and first[0].run_key != again[0].run_key


def test_cursor_for_another_model_is_rejected() -> None:
    _, cursor = diff_snapshots(None, snap(["1"]))
    with pytest.raises(ValueError, match="cursor is for model"):
        diff_snapshots(cursor, {"model": "other", "versions": [], "aliases": {}})
