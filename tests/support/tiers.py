"""The two tiers of tests: ``unit`` starts no service, ``integration`` runs on real ones.

A module marks its tests with ``pytestmark``; a test may add ``integration`` itself, e.g. the
PostgreSQL variant of a unit module's two-engine test (the ``warehouse`` fixture's param).
Integration wins: that test loses its module's ``unit`` mark, so ``pytest -m unit`` leaves it
out. And a unit test that reaches a service fixture fails loudly instead of starting it:
statically (its fixtures name one: a collection error) or at run time (it asked for one on the
fly, as the two-engine fixture does).
"""

from __future__ import annotations

import pytest

#: Fixtures that start (or connect to) a service, and the service they name.
SERVICE_FIXTURES = {
    "es_settings": "Elasticsearch",
    "es_client": "Elasticsearch",
    "postgres": "PostgreSQL",
}

_running: pytest.Item | None = None


def apply_tiers(items: list[pytest.Item]) -> None:
    """Move a module's ``unit`` mark onto its tests that are not ``integration``; refuse a
    unit test whose fixtures include a service."""
    by_module: dict[pytest.Module, list[pytest.Item]] = {}
    for item in items:
        module = item.getparent(pytest.Module)
        if module is not None:
            by_module.setdefault(module, []).append(item)
    for module, members in by_module.items():
        if not any(mark.name == "unit" for mark in module.own_markers):
            continue
        if not any(item.get_closest_marker("integration") for item in members):
            continue
        module.own_markers[:] = [mark for mark in module.own_markers if mark.name != "unit"]
        for item in members:
            if item.get_closest_marker("integration") is None:
                item.add_marker("unit")
    for item in items:
        if item.get_closest_marker("unit") is None:
            continue
        services = sorted({SERVICE_FIXTURES[f] for f in _fixtures(item) if f in SERVICE_FIXTURES})
        if services:
            raise pytest.UsageError(
                f"{item.nodeid} is marked unit but uses {', '.join(services)}: unit tests start "
                "no service (mark it integration)"
            )


def running(item: pytest.Item | None) -> None:
    """Remember the test being set up (a session fixture's request does not say which)."""
    global _running
    _running = item


def refuse_service_in_unit_test(service: str) -> None:
    """Called by each service fixture before it starts its service."""
    item = _running
    if item is not None and item.get_closest_marker("unit") is not None:
        pytest.fail(
            f"{item.nodeid} is marked unit but starts {service}: unit tests start no service "
            "(mark the test, or its parameter, integration)",
            pytrace=False,
        )


def _fixtures(item: pytest.Item) -> list[str]:
    return list(getattr(item, "fixturenames", ()))
