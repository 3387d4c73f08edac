"""``llmops-dagster bundle``: RAG bundles in the MLflow registry (status, approval, rollback).

The promotion rules live in :mod:`llmops_dagster.rag.bundle` (``approve_bundle``,
``rollback_bundle``) and :mod:`llmops_dagster.rag.promotion` (which moves the search alias with
a bundle of another embedding model); these commands only call them and print what moved.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from llmops_dagster.cli.context import checked_es_client, mlflow_client


@click.group()
def bundle() -> None:
    """RAG bundles in the MLflow registry: status, manual approval, rollback."""


@bundle.command("status")
def bundle_status() -> None:
    """Which bundle versions hold `champion` and `challenger`, and what they pin."""
    from mlflow.exceptions import MlflowException

    from llmops_dagster.rag.bundle import CHALLENGER, CHAMPION, DEFAULT_BUNDLE_MODEL, load_bundle

    client = mlflow_client()
    table = Table("alias", "version", "bundle")
    for alias in (CHAMPION, CHALLENGER):
        try:
            found = load_bundle(client, f"models:/{DEFAULT_BUNDLE_MODEL}@{alias}")
        except (MlflowException, ValueError):
            table.add_row(alias, "-", "none")
            continue
        table.add_row(alias, found.version, found.bundle.describe())
    Console().print(table)


@bundle.command("approve")
@click.argument("version")
@click.option("--by", "approver", required=True, help="Who approves (recorded in tags).")
def bundle_approve(version: str, approver: str) -> None:
    """Promote VERSION (a candidate awaiting manual approval) to `champion`, recording who/when.

    Only while the champion it was compared with is still the champion: otherwise it must be
    evaluated again against today's champion first."""
    from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL, BundleError
    from llmops_dagster.rag.promotion import approve_with_index

    settings, es = checked_es_client()
    try:
        promotion = approve_with_index(
            mlflow_client(),
            es,
            settings.elasticsearch.index_alias,
            DEFAULT_BUNDLE_MODEL,
            version,
            approver=approver,
        )
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    move = promotion.bundle
    click.echo(f"champion: v{move.previous_version or '-'} → v{move.new_version} (by {approver})")
    _echo_index_move(promotion)


def _echo_index_move(promotion: object) -> None:
    index = getattr(promotion, "index", None)
    if index is not None:
        click.echo(f"alias {index.alias}: {index.previous_index} → {index.new_index}")


@bundle.command("rollback")
def bundle_rollback() -> None:
    """Point `champion` back at the bundle it replaced (recorded at promotion), and the search
    alias back at the index it replaced when that bundle answers with another embedding model."""
    from llmops_dagster.evaluate.gate import RollbackError
    from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL
    from llmops_dagster.rag.promotion import rollback_with_index

    settings, es = checked_es_client()
    try:
        promotion = rollback_with_index(
            mlflow_client(), es, settings.elasticsearch.index_alias, DEFAULT_BUNDLE_MODEL
        )
    except RollbackError as exc:
        raise click.ClickException(str(exc)) from exc
    move = promotion.bundle
    click.echo(f"champion: v{move.previous_version} → v{move.new_version}")
    _echo_index_move(promotion)
