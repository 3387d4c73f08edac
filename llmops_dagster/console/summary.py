"""The demo's summary: one line per materialized asset and per check, after the run.

A check is shown as it ended: passed (green), warned (yellow: did not pass with severity
``WARN``, e.g. a candidate that did not beat the champion) or failed (red: severity ``ERROR``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from llmops_dagster.console.progress import CHECK_STYLE, check_outcome, shorten


def summary_table(
    result: Any, summary_keys: Mapping[str, Sequence[str]], *, title: str = "llmops-dagster demo"
) -> Table:
    """``result``: a Dagster ``ExecuteInProcessResult``. Each asset shows the metadata keys
    ``summary_keys`` names for it (else its row counts, else ``ok``); each check its outcome."""
    table = Table("asset", "result", title=title)
    for event in result.get_asset_materialization_events():
        key = event.asset_key.to_user_string()
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        wanted = summary_keys.get(key)
        shown = (
            {k: metadata[k] for k in wanted if k in metadata}
            if wanted
            else {k: v for k, v in metadata.items() if k.startswith("dagster/row_count")}
        )
        table.add_row(key, ", ".join(f"{k}={shorten(v)}" for k, v in shown.items()) or "ok")
    for check in result.get_asset_check_evaluations():
        outcome = check_outcome(check.passed, check.severity)
        style = CHECK_STYLE[outcome]
        table.add_row(
            f"check {check.asset_key.to_user_string()}:{check.check_name}",
            f"[{style}]{outcome}[/{style}]",
        )
    return table
