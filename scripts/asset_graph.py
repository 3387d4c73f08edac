"""Print the code location's asset graph as Mermaid, generated from the Definitions.

`--write-readme` replaces the block between the asset-graph markers in README.md, and a unit
test checks that the README's picture equals this output, so it cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- asset-graph:begin -->", "<!-- asset-graph:end -->"


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


def readme_block(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


if __name__ == "__main__":
    block = mermaid()
    if "--write-readme" in sys.argv:
        text = README.read_text()
        head, rest = text.split(BEGIN, 1)
        README.write_text(f"{head}{BEGIN}\n{block}\n{END}{rest.split(END, 1)[1]}")
    print(block)
