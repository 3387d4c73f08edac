"""``llmops-dagster services``: the local Elasticsearch node, the MLflow store, Dagster's state."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from llmops_dagster.cli.context import get_settings, log


@click.group()
def services() -> None:
    """Local services: Elasticsearch node, MLflow store, Dagster UI."""


@services.command("fetch")
def services_fetch() -> None:
    """Download and unpack the Elasticsearch distribution and build its local-node plugin
    (once each; cached under LLMOPS_HOME)."""
    from llmops_dagster.services.elasticsearch_local import (
        ElasticsearchSetupError,
        fetch_distribution,
    )
    from llmops_dagster.services.es_plugin import ensure_plugin

    settings = get_settings()
    try:
        home = fetch_distribution(settings.es_dist_dir, settings.local_node.version, log=log)
        # Built and installed once here, so set-up does it and node starts only check it.
        ensure_plugin(
            home,
            java_home=settings.local_node.java_home,
            fallback_java_home=settings.local_node.default_java_home,
            log=log,
        )
    except ElasticsearchSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(home))


@services.command("up")
@click.option(
    "--nodes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Elasticsearch nodes: 1 = the single local node; N > 1 = a local cluster on "
    "LLMOPS_ES_PORT and the next N-1 ports (transport on the same + 100).",
)
def services_up(nodes: int) -> None:
    """Start the local Elasticsearch node (or check ELASTICSEARCH_URL) and the MLflow store."""
    from llmops_dagster.search.client import ElasticsearchUnavailable
    from llmops_dagster.services.elasticsearch_local import ElasticsearchSetupError
    from llmops_dagster.services.local import elasticsearch_up
    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable, ensure_mlflow

    settings = get_settings()
    try:
        status = elasticsearch_up(settings, log=log, nodes=nodes)
        store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
    except (ElasticsearchSetupError, ElasticsearchUnavailable, MlflowUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    log(f"MLflow store: {store.tracking_uri}")
    if nodes > 1:
        for node in status["nodes"]:
            log(f"{node['name']}: {node['url']} (pid {node['pid']})")
        log(
            "Set LLMOPS_ES_REPLICAS=1 for the indices you build on it, so every shard has a "
            "copy on a second node: with 0 replicas a stopped node takes its shards with it."
        )
    click.echo(f"ELASTICSEARCH_URL={status['url']}")


@services.command("down")
def services_down() -> None:
    """Stop the local Elasticsearch node (or every node of the local cluster) by its pid."""
    from llmops_dagster.services.local import elasticsearch_down

    stopped = elasticsearch_down(get_settings(), log=log)
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
        Console().print(_status_table(status))
    healthy = status["elasticsearch"].get("healthy") and status["mlflow"]["healthy"]
    sys.exit(0 if healthy else 1)


def _status_table(status: dict) -> Table:
    table = Table("service", "state", "where", "detail")
    es, ml, dg = status["elasticsearch"], status["mlflow"], status["dagster"]
    es_ok = bool(es.get("healthy"))
    table.add_row(
        "elasticsearch",
        "[green]healthy[/green]" if es_ok else "[red]down[/red]",
        es["url"],
        es.get("error")
        or f"{es.get('status')} · {'external' if es['external'] else 'local'}"
        + (f" · {es['number_of_nodes']} nodes" if es.get("number_of_nodes") else ""),
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
    return table
