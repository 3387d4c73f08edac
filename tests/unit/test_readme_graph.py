from __future__ import annotations

import importlib.util

import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.unit


def test_readme_asset_graph_matches_the_code_location() -> None:
    spec = importlib.util.spec_from_file_location(
        "asset_graph", PROJECT_ROOT / "scripts/asset_graph.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert module.readme_block(readme) == module.mermaid(), (
        "README's asset graph is stale: run .venv/bin/python scripts/asset_graph.py --write-readme"
    )
