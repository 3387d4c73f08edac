"""Write docs/asset-graph.mmd: the code location's asset graph as Mermaid, generated from the
Definitions (so the picture in the README cannot drift from the code)."""

from __future__ import annotations

import sys
from pathlib import Path

from llmops_dagster.definitions import defs


def mermaid() -> str:
    graph = defs.resolve_asset_graph()
    keys = sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(graph.get(key).group_name or "default", []).append(key.to_user_string())
    node = {k.to_user_string(): f"n{i}" for i, k in enumerate(keys)}
    lines = ["flowchart LR"]
    for group, members in groups.items():
        lines.append(f"  subgraph {group}")
        lines += [f'    {node[m]}["{m}"]' for m in members]
        lines.append("  end")
    for key in keys:
        for parent in sorted(graph.get(key).parent_keys, key=lambda k: k.to_user_string()):
            lines.append(f"  {node[parent.to_user_string()]} --> {node[key.to_user_string()]}")
    for check in sorted(graph.asset_check_keys, key=lambda c: (c.asset_key.to_user_string(), c.name)):
        lines.append(f"  %% check {check.asset_key.to_user_string()}: {check.name}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/asset-graph.mmd")
    target.write_text(mermaid())
    print(target.read_text())
