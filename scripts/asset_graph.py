"""Print the code location's pictures as Mermaid, generated from the Definitions.

- the asset graph (README.md, between the asset-graph markers);
- the configuration flow, settings → resources → RAG pipeline → assets (docs/ARCHITECTURE.md,
  between the resource-flow markers): which resources each asset requires, read from the
  Definitions, and which assets build the RAG pipeline, read from their source.

`--write` replaces both blocks, and a unit test checks that the documents' pictures equal this
output, so they cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
BEGIN, END = "<!-- asset-graph:begin -->", "<!-- asset-graph:end -->"
FLOW_BEGIN, FLOW_END = "<!-- resource-flow:begin -->", "<!-- resource-flow:end -->"


def _node(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def mermaid() -> str:
    from llmops_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    order = ["ingest", "prepare", "index", "model", "evaluate"]
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(graph.get(key).group_name or "default", []).append(key.to_user_string())
    lines = ["```mermaid", "flowchart LR"]
    for group in sorted(groups, key=lambda g: (order.index(g) if g in order else 99, g)):
        lines.append(f"  subgraph {group}")
        lines += [f'    {_node(m)}["{m}"]' for m in groups[group]]
        lines.append("  end")
    for key in keys:
        for parent in sorted(graph.get(key).parent_keys, key=lambda k: k.to_user_string()):
            lines.append(f"  {_node(parent.to_user_string())} --> {_node(key.to_user_string())}")
    lines.append("```")
    return "\n".join(lines)


def _uses_rag_pipeline(assets_def: object) -> bool:
    import inspect

    fn = assets_def.op.compute_fn.decorated_fn  # type: ignore[attr-defined]
    sources = [inspect.getsource(fn)]
    # A helper of the asset's own module that builds the pipeline for it counts too.
    for name in fn.__code__.co_names:
        helper = fn.__globals__.get(name)
        if inspect.isfunction(helper) and helper.__module__ == fn.__module__:
            sources.append(inspect.getsource(helper))
    return any("build_rag_pipeline(" in s or "build_bundle_pipeline(" in s for s in sources)


def resource_flow_mermaid() -> str:
    """Settings group → resource → (RAG pipeline) → asset, from the code location."""
    from llmops_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    assets_defs = sorted(
        {
            id(graph.get(k).assets_def): graph.get(k).assets_def for k in graph.get_all_asset_keys()
        }.values(),
        key=lambda a: a.node_def.name,
    )
    resources = sorted(defs.resources or {})
    lines = ["```mermaid", "flowchart LR", '  env[("environment<br/>config.Settings")]']
    for key in resources:
        lines.append(f'  env --> res_{key}["{key}<br/>{type(defs.resources[key]).__name__}"]')
    lines.append('  rag{{"RagPipeline<br/>(build_rag_pipeline / build_bundle_pipeline)"}}')
    users: list[str] = []
    for assets_def in assets_defs:
        node = f"asset_{_node(assets_def.node_def.name)}"
        label = ", ".join(sorted(k.to_user_string() for k in assets_def.keys))
        lines.append(f'  {node}(["{label}"])')
        for key in sorted(set(assets_def.required_resource_keys) & set(resources)):
            lines.append(f"  res_{key} --> {node}")
        if _uses_rag_pipeline(assets_def):
            users.append(node)
    for key in ("elasticsearch", "models", "mlflow"):
        lines.append(f"  res_{key} --> rag")
    lines += [f"  rag --> {node}" for node in users]
    lines.append('  rag --> cli_ask[/"llmops-dagster ask"/]')
    lines.append("```")
    return "\n".join(lines)


def block(text: str, begin: str = BEGIN, end: str = END) -> str:
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def readme_block(text: str) -> str:
    return block(text)


def _replace(path: Path, begin: str, end: str, content: str) -> None:
    text = path.read_text()
    head, rest = text.split(begin, 1)
    path.write_text(f"{head}{begin}\n{content}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    graph_block, flow_block = mermaid(), resource_flow_mermaid()
    if "--write" in sys.argv or "--write-readme" in sys.argv:
        _replace(README, BEGIN, END, graph_block)
        _replace(ARCHITECTURE, FLOW_BEGIN, FLOW_END, flow_block)
    print(graph_block)
    print(flow_block)
