"""The demo: start the local services and materialize the whole asset graph on the sample corpus.

Runs go into the project's Dagster instance (``dagster_home/``), so ``llmops-dagster dev``
shows them afterwards, with their metadata and logs. The console shows a live row per step and
the summary (``llmops_dagster.console``); the full log goes to a file whose path is printed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from llmops_dagster.config import Settings
from llmops_dagster.console import demo_log_path, run_job_with_console, shorten

# The metadata worth a line in the summary, per asset (everything else is in the UI).
SUMMARY_KEYS: dict[str, tuple[str, ...]] = {
    "documents": ("total_documents", "new", "changed", "deleted", "rejected"),
    "chunks": ("active_chunks", "docs_chunked", "chunks_added", "chunks_removed"),
    "embeddings": ("model_id", "embedded", "cached", "texts_per_second"),
    "search_index": ("mode", "alias", "index", "doc_count", "indexed", "deleted"),
    "finetune_dataset": ("n_train", "n_validation", "digest"),
    "lora_adapter": ("model_uri", "steps", "eval_loss_before", "eval_loss_after"),
    "rag_evaluation": (
        "model_uri",
        "cases",
        "metric/recall_at_5",
        "metric/ndcg_at_10",
        "metric/mrr",
        "metric/token_f1",
        "metric/rouge_l",
        "gate_passed",
    ),
    "champion_model": ("champion", "version", "previous_version", "promoted"),
}

# The key of the demo's logger in the job's logger definitions and in the run config.


def run_demo(settings: Settings, *, keep_services: bool, log: Callable[[str], None]) -> int:
    import dagster as dg

    from llmops_dagster.definitions import build_definitions
    from llmops_dagster.services.local import dagster_home, elasticsearch_down, elasticsearch_up
    from llmops_dagster.tracking.store import ensure_mlflow

    console = Console()
    began = time.perf_counter()
    log("1/3 services: Elasticsearch + MLflow")
    es = elasticsearch_up(settings, log=log)
    store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)

    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    run_id = str(uuid.uuid4())
    log_path = demo_log_path(home, run_id)
    log("2/3 materializing the asset graph on the sample corpus")
    log(f"full Dagster log (DEBUG) and library output: {log_path}")
    defs = build_definitions(settings.override(elasticsearch={"url": es["url"]}))
    with dg.DagsterInstance.get() as instance:
        result, _ = run_job_with_console(
            defs, instance=instance, console=console, log_path=log_path, run_id=run_id
        )
    log("3/3 summary")

    table = Table("asset", "result", title="llmops-dagster demo")
    for event in result.get_asset_materialization_events():
        key = event.asset_key.to_user_string()
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        wanted = SUMMARY_KEYS.get(key)
        shown = (
            {k: metadata[k] for k in wanted if k in metadata}
            if wanted
            else {k: v for k, v in metadata.items() if k.startswith("dagster/row_count")}
        )
        table.add_row(key, ", ".join(f"{k}={shorten(v)}" for k, v in shown.items()) or "ok")
    for check in result.get_asset_check_evaluations():
        table.add_row(
            f"check {check.asset_key.to_user_string()}:{check.check_name}",
            "[green]passed[/green]" if check.passed else "[red]failed[/red]",
        )
    console.print(table)
    console.print(
        f"Run {result.run_id} {'succeeded' if result.success else '[red]failed[/red]'} in "
        f"{time.perf_counter() - began:.0f}s.\n"
        f"Dagster UI:  .venv/bin/llmops-dagster dev → http://127.0.0.1:3000 ({home})\n"
        f"MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {store.tracking_uri}\n"
        f"Elasticsearch: {es['url']} (alias {settings.elasticsearch.index_alias})"
    )
    _print_champion_lineage(console, settings, store.tracking_uri)
    console.print(f"Full log of the run: {log_path}")
    if not keep_services:
        elasticsearch_down(settings, log=log)
    return 0 if result.success else 1


def _print_champion_lineage(console: Console, settings: Settings, tracking_uri: str) -> None:
    """The champion's chain: the evaluation that promoted it back to data and code."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from llmops_dagster.evaluate.gate import TAG_EVAL_RUN
    from llmops_dagster.tracking.trace import trace

    client = MlflowClient(tracking_uri)
    try:
        champion = client.get_model_version_by_alias(settings.models.adapter_model_name, "champion")
    except MlflowException:
        console.print("[yellow]No champion yet: the quality gate did not pass.[/yellow]")
        return
    evaluation_run = champion.tags.get(TAG_EVAL_RUN) or champion.run_id
    chain = trace(client, evaluation_run)
    table = Table("step", "mlflow run", "facts", title=(
        f"champion models:/{settings.models.adapter_model_name}/{champion.version} — lineage"
    ))  # fmt: skip
    for node in chain.nodes:
        facts = ", ".join(f"{k}={shorten(v)}" for k, v in node.facts.items())
        table.add_row(node.asset_key, node.run_id[:12], facts)
    console.print(table)
    code = {n.code_version for n in chain.nodes}
    console.print(
        f"code version: {', '.join(sorted(code))} · links resolved: "
        f"{'all' if chain.complete else 'missing ' + ', '.join(chain.unresolved)}\n"
        f"Full chain: .venv/bin/llmops-dagster lineage {evaluation_run}"
    )
