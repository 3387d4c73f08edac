from __future__ import annotations

import importlib.util

import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.unit


def _script():
    spec = importlib.util.spec_from_file_location(
        "asset_graph", PROJECT_ROOT / "scripts/asset_graph.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_asset_graph_matches_the_code_location() -> None:
    module = _script()
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert module.readme_block(readme) == module.mermaid(), (
        "README's asset graph is stale: run .venv/bin/python scripts/asset_graph.py --write"
    )


def test_architecture_resource_flow_matches_the_code_location() -> None:
    module = _script()
    doc = (PROJECT_ROOT / "docs" / "ARCHITECTURE.md").read_text()
    flow = module.resource_flow_mermaid()
    assert module.block(doc, module.FLOW_BEGIN, module.FLOW_END) == flow, (
        "docs/ARCHITECTURE.md is stale: run .venv/bin/python scripts/asset_graph.py --write"
    )
    # What the picture must show: the pipeline is built once from three resources and used by
    # evaluation and the fine-tuning dataset (and `ask`), never wired by hand elsewhere.
    assert "rag --> asset_rag_evaluation" in flow
    assert "rag --> asset_finetune_dataset" in flow
    assert "res_mlflow --> asset_chunks" in flow  # every tracked asset logs through mlflow
    assert "res_warehouse --> asset_documents" in flow
