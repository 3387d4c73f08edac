"""``llmops-dagster bundle``: RAG bundles in the MLflow registry (status, approval, rollback).

The promotion rules live in :mod:`llmops_dagster.rag.bundle` (``approve_bundle``,
``rollback_bundle``); these commands only call them and print what moved.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from llmops_dagster.cli.context import mlflow_client


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
    from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL, BundleError, approve_bundle

    try:
        move = approve_bundle(mlflow_client(), DEFAULT_BUNDLE_MODEL, version, approver=approver)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"champion: v{move.previous_version or '-'} → v{move.new_version} (by {approver})")


@bundle.command("rollback")
def bundle_rollback() -> None:
    """Point `champion` back at the bundle it replaced (recorded at promotion)."""
    from llmops_dagster.evaluate.gate import RollbackError
    from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL, rollback_bundle

    try:
        move = rollback_bundle(mlflow_client(), DEFAULT_BUNDLE_MODEL)
    except RollbackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"champion: v{move.previous_version} → v{move.new_version}")
