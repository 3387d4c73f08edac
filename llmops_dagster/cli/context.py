"""What every command gets from the settings: the stderr console, the log line, the code
location's resources and their checked clients.

Commands turn library errors into ``click.ClickException`` (one line, exit 1) here or at
their call site; nothing below decides anything a library function does not already decide.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from llmops_dagster.config import Settings

#: Progress and notes go to stderr; a command's result (text or ``--json``) goes to stdout.
console = Console(stderr=True)


def get_settings() -> Settings:
    return Settings()


def log(message: str) -> None:
    console.print(f"[dim]·[/dim] {message}")


def resources(settings: Settings | None = None) -> dict[str, Any]:
    """The code location's resources, built from the same settings (secrets resolved)."""
    from llmops_dagster.resources import build_resources

    return build_resources(settings or get_settings(), with_dlt=False, resolve_secrets=True)


def checked_es_client() -> tuple[Settings, Any]:
    """The settings and a connected Elasticsearch client (an unreachable cluster: exit 1)."""
    from llmops_dagster.search.client import ElasticsearchUnavailable

    settings = get_settings()
    try:
        client = resources(settings)["elasticsearch"].get_client()
    except ElasticsearchUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    return settings, client


def mlflow_client() -> Any:
    """The MLflow client of the configured store (an unusable store: exit 1)."""
    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable

    try:
        return resources()["mlflow"].client()
    except MlflowUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


def parse_groups(text: str) -> list[str]:
    """``--groups hr, ops`` → ``["hr", "ops"]`` (blanks dropped)."""
    return [group.strip() for group in text.split(",") if group.strip()]
