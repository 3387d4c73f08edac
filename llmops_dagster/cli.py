"""``llmops-dagster``: local services, the Dagster UI, and the demo."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

import llmops_dagster
from llmops_dagster.config import Settings, apply_offline_env_defaults

console = Console(stderr=True)


def get_settings() -> Settings:
    return Settings()


def _log(message: str) -> None:
    console.print(f"[dim]·[/dim] {message}")


@click.group()
@click.version_option(llmops_dagster.__version__)
def main() -> None:
    """llmops-dagster: a Dagster code location for the whole LLMOps loop."""
    # This process starts here: offline defaults before any library reads them.
    apply_offline_env_defaults()


# --------------------------------------------------------------------------------------------
# services
# --------------------------------------------------------------------------------------------


@main.group()
def services() -> None:
    """Local services: Elasticsearch node, MLflow store, Dagster UI."""


@services.command("fetch")
def services_fetch() -> None:
    """Download and unpack the Elasticsearch distribution (once; cached under LLMOPS_HOME)."""
    from llmops_dagster.services.elasticsearch_local import (
        ElasticsearchSetupError,
        fetch_distribution,
    )

    settings = get_settings()
    try:
        home = fetch_distribution(settings.es_dist_dir, settings.local_node.version, log=_log)
    except ElasticsearchSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(home))


@services.command("up")
def services_up() -> None:
    """Start the local Elasticsearch node (or check ELASTICSEARCH_URL) and the MLflow store."""
    from llmops_dagster.search.client import ElasticsearchUnavailable
    from llmops_dagster.services.elasticsearch_local import ElasticsearchSetupError
    from llmops_dagster.services.local import elasticsearch_up
    from llmops_dagster.tracking.store import MlflowUnavailable, ensure_mlflow

    settings = get_settings()
    try:
        status = elasticsearch_up(settings, log=_log)
        store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
    except (ElasticsearchSetupError, ElasticsearchUnavailable, MlflowUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    _log(f"MLflow store: {store.tracking_uri}")
    click.echo(f"ELASTICSEARCH_URL={status['url']}")


@services.command("down")
def services_down() -> None:
    """Stop the local Elasticsearch node by its pid."""
    from llmops_dagster.services.local import elasticsearch_down

    stopped = elasticsearch_down(get_settings(), log=_log)
    click.echo("stopped" if stopped else "not running")


@services.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--dagster-port", default=3000, show_default=True)
def services_status_cmd(as_json: bool, dagster_port: int) -> None:
    """Report Elasticsearch, MLflow and Dagster state; exit 1 if ES or MLflow is unusable."""
    from llmops_dagster.services.local import services_status

    status = services_status(get_settings(), dagster_port=dagster_port)
    if as_json:
        click.echo(json.dumps(status, indent=2, default=str))
    else:
        table = Table("service", "state", "where", "detail")
        es, ml, dg = status["elasticsearch"], status["mlflow"], status["dagster"]
        es_ok = bool(es.get("healthy"))
        table.add_row(
            "elasticsearch",
            "[green]healthy[/green]" if es_ok else "[red]down[/red]",
            es["url"],
            es.get("error") or f"{es.get('status')} · {'external' if es['external'] else 'local'}",
        )
        table.add_row(
            "mlflow",
            "[green]ready[/green]" if ml["healthy"] else "[red]unusable[/red]",
            ml["uri"],
            ml.get("error") or f"experiment {ml.get('experiment')}",
        )
        table.add_row(
            "dagster",
            "[green]serving[/green]" if dg["running"] else "[yellow]not running[/yellow]",
            dg["url"],
            "start with `llmops-dagster dev`" if not dg["running"] else str(dg.get("version")),
        )
        Console().print(table)
    healthy = status["elasticsearch"].get("healthy") and status["mlflow"]["healthy"]
    sys.exit(0 if healthy else 1)


# --------------------------------------------------------------------------------------------
# index
# --------------------------------------------------------------------------------------------


@main.group()
def index() -> None:
    """The Elasticsearch alias and its versioned indices."""


def _resources(settings: Settings) -> dict:
    """The code location's resources, built from the same settings (secrets resolved)."""
    from llmops_dagster.resources import build_resources

    return build_resources(settings, with_dlt=False, resolve_secrets=True)


def _checked_client():
    from llmops_dagster.search.client import ElasticsearchUnavailable

    settings = get_settings()
    elasticsearch = _resources(settings)["elasticsearch"]
    try:
        client = elasticsearch.get_client()
    except ElasticsearchUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    return settings, client


@index.command("status")
def index_status() -> None:
    """The alias, the index it points to, and the versions kept for rollback."""
    from llmops_dagster.search.aliases import current_index, list_versions

    settings, client = _checked_client()
    alias = settings.elasticsearch.index_alias
    live = current_index(client, alias)
    table = Table("index", "docs", "live")
    for name in list_versions(client, alias):
        count = client.count(index=name)["count"]
        table.add_row(name, str(count), "[green]←[/green]" if name == live else "")
    Console().print(table)
    if live is None:
        click.echo(f"alias {alias} does not exist yet: materialize search_index")


@index.command("rollback")
def index_rollback() -> None:
    """Point the alias back at the previous kept index (atomic alias swap)."""
    from llmops_dagster.search.aliases import RollbackError, current_index, rollback

    settings, client = _checked_client()
    alias = settings.elasticsearch.index_alias
    live = current_index(client, alias)
    try:
        target = rollback(client, alias)
    except RollbackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{alias}: {live} → {target}")


# --------------------------------------------------------------------------------------------
# RAG
# --------------------------------------------------------------------------------------------


def _champion_uri(mlflow, name: str) -> str | None:
    """``models:/<name>@champion`` when the registry has a champion adapter, else None."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow.client().get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    return f"models:/{name}@champion"


@main.command("ask")
@click.argument("question")
@click.option("--k", default=3, show_default=True, help="Chunks retrieved as context.")
@click.option(
    "--mode",
    default="hybrid_rrf",
    show_default=True,
    type=click.Choice(["bm25", "knn", "hybrid_rrf", "hybrid_linear", "server_rrf"]),
)
@click.option(
    "--model",
    "model_ref",
    default="champion",
    show_default=True,
    help="'champion' (the promoted adapter, else the base), 'base', or a models:/ URI.",
)
@click.option("--max-new-tokens", default=96, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def ask(
    question: str, k: int, mode: str, model_ref: str, max_new_tokens: int, as_json: bool
) -> None:
    """Answer QUESTION from the index, citing chunk ids."""
    from llmops_dagster.models.base import GeneratorError
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.resources import build_rag_pipeline
    from llmops_dagster.search.client import ElasticsearchUnavailable
    from llmops_dagster.tracking.store import MlflowUnavailable

    resources = _resources(get_settings())
    models, mlflow = resources["models"], resources["mlflow"]
    with console.status("loading models ..."):
        try:
            adapter_uri = None
            if model_ref == "champion":
                adapter_uri = _champion_uri(mlflow, models.adapter_model_name)
            elif model_ref != "base":
                adapter_uri = model_ref
            pipeline = build_rag_pipeline(
                resources["elasticsearch"],
                models,
                mlflow,
                adapter_uri=adapter_uri,
                retrieval=RetrievalSettings(mode=mode, k=k),
                max_new_tokens=max_new_tokens,
            )
        except (GeneratorError, ElasticsearchUnavailable, MlflowUnavailable) as exc:
            raise click.ClickException(str(exc)) from exc
    with console.status("retrieving and generating ..."):
        result = pipeline.answer(question)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    out = Console()
    out.print(f"[bold]{result.text.strip()}[/bold]\n")
    cites = ", ".join(result.cited_chunk_ids) or "none"
    out.print(f"cited: {cites}{' (inferred)' if result.citations_inferred else ''}")
    for hit in result.retrieved:
        out.print(f"  [dim]{hit.chunk_id}[/dim] {hit.doc_id} ({hit.score:.3f})")
    out.print(
        f"model {result.model_id} · prompt {result.prompt_name}@{result.prompt_version} · "
        f"retrieve {result.retrieve_ms:.0f} ms · generate {result.generate_ms:.0f} ms · "
        f"tokens {result.prompt_tokens}+{result.completion_tokens}"
    )


@main.command("lineage")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def lineage(ref: str, as_json: bool) -> None:
    """The chain behind REF: an MLflow run id, models:/<name>/<version> or models:/<name>@alias.

    Exits 1 when a link of the chain cannot be resolved.
    """
    from dataclasses import asdict

    from mlflow.tracking import MlflowClient

    from llmops_dagster.tracking.store import MlflowUnavailable, ensure_mlflow
    from llmops_dagster.tracking.trace import LineageError, trace

    settings = get_settings()
    try:
        store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
        chain = trace(MlflowClient(store.tracking_uri), ref)
    except (MlflowUnavailable, LineageError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(asdict(chain), indent=2))
    else:
        out = Console()
        out.print(f"[bold]lineage of {ref}[/bold] (run {chain.start})")
        for node in chain.nodes:
            out.print(
                f"\n[bold cyan]{node.asset_key}[/bold cyan]  mlflow run {node.run_id}  "
                f"dagster run {node.dagster_run_id[:8]}  code {node.code_version[:12]}"
            )
            for key, value in node.facts.items():
                out.print(f"    {key}: {value}")
            for asset, run_id in node.upstream.items():
                out.print(f"    ← {asset} ({run_id})")
        if chain.unresolved:
            out.print(f"[red]unresolved runs: {', '.join(chain.unresolved)}[/red]")
    sys.exit(0 if chain.complete else 1)


# --------------------------------------------------------------------------------------------
# Dagster
# --------------------------------------------------------------------------------------------


@main.command("dev")
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def dev(port: int, host: str) -> None:
    """Run `dagster dev` on this code location; Ctrl-C / SIGTERM stop it cleanly."""
    from llmops_dagster.services.dagster_dev import run_dagster_dev
    from llmops_dagster.services.local import dagster_home

    sys.exit(run_dagster_dev(dagster_home(), host=host, port=port))


@main.command("demo")
@click.option("--keep-services/--stop-services", default=True, show_default=True)
def demo(keep_services: bool) -> None:
    """Start the services and materialize the whole asset graph on the sample corpus."""
    from llmops_dagster.demo import run_demo

    sys.exit(run_demo(get_settings(), keep_services=keep_services, log=_log))


if __name__ == "__main__":
    main()
