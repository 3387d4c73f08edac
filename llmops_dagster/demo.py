"""The demo: start the local services and materialize the whole asset graph on the sample corpus.

Runs go into the project's Dagster instance (``dagster_home/``), so ``llmops-dagster dev``
shows them afterwards, with their metadata and logs. The console shows a live row per step and
the summary (``llmops_dagster.console``); the full log goes to a file whose path is printed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from llmops_dagster.config import Settings
from llmops_dagster.console import demo_log_path, run_job_with_console, shorten, summary_table

# The metadata worth a line in the summary, per asset (everything else is in the UI).
SUMMARY_KEYS: dict[str, tuple[str, ...]] = {
    "documents": ("total_documents", "new", "changed", "deleted", "rejected"),
    "chunks": ("active_chunks", "docs_chunked", "chunks_added", "chunks_removed"),
    "embeddings": ("model_id", "embedded", "cached", "texts_per_second"),
    "search_index": ("mode", "alias", "index", "doc_count", "indexed", "deleted"),
    "finetune_dataset": (
        "n_handwritten",
        "n_drafted",
        "n_dropped_golden_overlap",
        "n_train",
        "n_validation",
        "digest",
    ),
    "lora_adapter": (
        "model_uri",
        "recipe/chosen",
        "search_seconds",
        "steps",
        "eval_loss_before",
        "eval_loss_after",
    ),
    "rag_evaluation": (
        "bundle_uri",
        "model_uri",
        "cases",
        "metric/recall_at_5",
        "metric/ndcg_at_10",
        "metric/mrr_at_10",
        "metric/token_f1",
        "answers_generated/candidate",
        "answers_reused/baseline",
        "decision",
    ),
    "champion_model": ("alias", "version", "previous_version", "promoted"),
}

#: The demo's evaluations: every golden question, answers of one sentence (the references are
#: one sentence; `rag/defaults.py`). Answers whose every input is unchanged are reused
#: (`evaluate/answer_reuse.py`), so the base model and the adapter each answer once per demo.
DEMO_EVALUATION: dict[str, Any] = {}


def run_demo(settings: Settings, *, keep_services: bool, log: Callable[[str], None]) -> int:
    import dagster as dg

    from llmops_dagster.definitions import build_definitions
    from llmops_dagster.services.local import elasticsearch_down, elasticsearch_up
    from llmops_dagster.tracking.mlflow_store import ensure_mlflow

    console = Console()
    began = time.perf_counter()
    log("1/3 services: Elasticsearch + MLflow")
    es = elasticsearch_up(settings, log=log)
    store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)

    # The project's instance (DAGSTER_HOME, else dagster_home/), opened by its folder: the runs
    # execute in this process, so nothing else needs DAGSTER_HOME.
    home = settings.dagster_home
    run_id = str(uuid.uuid4())
    log_path = demo_log_path(home, run_id)
    log("2/3 materializing the asset graph on the sample corpus")
    log(f"full Dagster log (DEBUG) and library output: {log_path}")
    defs = build_definitions(settings.override(elasticsearch={"url": es["url"]}))
    evaluations = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result, _ = run_job_with_console(
            defs,
            instance=instance,
            console=console,
            log_path=log_path,
            run_id=run_id,
            job_name="whole_graph",
            run_config={"ops": {"rag_evaluation": {"config": DEMO_EVALUATION}}},
        )
        evaluations.append(("LoRA adapter", result))
        if result.success:
            log("2b/3 the extractive baseline (no model) against the champion")
            extractive = _evaluate(defs, instance, console, log_path, generator="extractive")
            evaluations.append(("extractive answerer", extractive))
            champion = _champion(store.tracking_uri)
            faced = adapter_faced_extractive(
                _decision(result),
                _decision(extractive),
                adapter_baseline=_metadata(result).get("baseline_version"),
                champion=champion.version if champion else None,
                champion_is_extractive=bool(champion and champion.bundle.generator == "extractive"),
            )
            if not faced:
                # Evaluate the adapter once more against today's champion, on answers both
                # sides recorded already (nothing is generated again).
                log("2c/3 the LoRA adapter against today's champion (answers reused)")
                again = _evaluate(defs, instance, console, log_path, generator="llm")
                evaluations.append(("LoRA adapter vs today's champion", again))
    log("3/3 summary")

    console.print(summary_table(result, SUMMARY_KEYS))
    console.print(
        f"Run {result.run_id} {'succeeded' if result.success else '[red]failed[/red]'} in "
        f"{time.perf_counter() - began:.0f}s.\n"
        f"Dagster UI:  .venv/bin/llmops-dagster dev → http://127.0.0.1:3000 ({home})\n"
        f"MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {store.tracking_uri}\n"
        f"Elasticsearch: {es['url']} (alias {settings.elasticsearch.index_alias})"
    )
    for label, evaluated in evaluations:
        print_decision(console, label, evaluated)
    _print_champion_lineage(console, settings, store.tracking_uri)
    console.print(f"Full log of the run: {log_path}")
    if not keep_services:
        elasticsearch_down(settings, log=log)
    return 0 if result.success else 1


def _evaluate(defs: Any, instance: Any, console: Console, log_path: Any, *, generator: str) -> Any:
    result, _ = run_job_with_console(
        defs,
        instance=instance,
        console=console,
        log_path=log_path,
        job_name="evaluate_candidate",
        run_config={
            "ops": {"rag_evaluation": {"config": {**DEMO_EVALUATION, "generator": generator}}}
        },
    )
    return result


def adapter_faced_extractive(
    adapter_decision: str | None,
    extractive_decision: str | None,
    *,
    adapter_baseline: str | None = None,
    champion: str | None = None,
    champion_is_extractive: bool = False,
) -> bool:
    """Whether the adapter was already compared with the extractive answerer: the extractive
    evaluation faced the adapter as champion and the adapter stayed champion, or the adapter's
    own evaluation was against an extractive champion (``adapter_baseline``) that is still
    ``champion``. Otherwise a third evaluation is needed."""
    if adapter_decision == "champion" and extractive_decision != "champion":
        return True
    return champion_is_extractive and champion is not None and adapter_baseline == champion


def _metadata(result: Any) -> dict[str, str]:
    """``rag_evaluation``'s metadata as text (empty when it did not materialize)."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == "rag_evaluation":
            return {k: str(v.value) for k, v in event.materialization.metadata.items()}
    return {}


def _decision(result: Any) -> str | None:
    """The evaluation's decision (champion / challenger / refused …), None without one."""
    return _metadata(result).get("decision")


def _champion(tracking_uri: str) -> Any:
    from llmops_dagster.rag.bundle import current_champion
    from llmops_dagster.tracking.mlflow_store import mlflow_client

    return current_champion(mlflow_client(tracking_uri))


def print_decision(console: Console, label: str, result: Any) -> None:
    """Candidate vs baseline with paired 95 % intervals, and what the policy decided."""
    events = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "rag_evaluation"
    ]
    if not events:
        console.print(f"[red]{label}: no evaluation (see the log)[/red]")
        return
    meta = {k: v.value for k, v in events[0].materialization.metadata.items()}
    console.print(
        f"\n[bold]{label}[/bold] {meta['bundle_uri']} vs {meta['baseline']} "
        f"on {meta['cases']} golden questions"
    )
    console.print(Markdown(str(meta["comparison"])))
    style = {"champion": "green", "challenger": "yellow", "refused": "red"}.get(
        str(meta["decision"]), "cyan"
    )
    console.print(f"decision: [{style}]{meta['decision']}[/{style}] — {meta['decision_summary']}")


def _print_champion_lineage(console: Console, settings: Settings, tracking_uri: str) -> None:
    """The champion's chain: the evaluation that promoted it back to data and code."""
    from mlflow.exceptions import MlflowException

    from llmops_dagster.evaluate.gate import TAG_EVAL_RUN
    from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL
    from llmops_dagster.tracking.mlflow_store import mlflow_client
    from llmops_dagster.tracking.trace import trace

    client = mlflow_client(tracking_uri)
    try:
        champion = client.get_model_version_by_alias(DEFAULT_BUNDLE_MODEL, "champion")
    except MlflowException:
        console.print("[yellow]No champion bundle yet: no candidate beat the base model.[/yellow]")
        return
    evaluation_run = champion.tags.get(TAG_EVAL_RUN) or champion.run_id
    chain = trace(client, evaluation_run)
    table = Table("step", "mlflow run", "facts", title=(
        f"champion models:/{DEFAULT_BUNDLE_MODEL}/{champion.version} — lineage"
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
