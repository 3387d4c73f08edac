"""``llmops-dagster index``: the search alias, its versioned indices, rollback."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from llmops_dagster.cli.context import checked_es_client


@click.group()
def index() -> None:
    """The Elasticsearch alias and its versioned indices."""


@index.command("status")
def index_status() -> None:
    """The alias, the index it points to, and the versions kept for rollback."""
    from llmops_dagster.search.aliases import current_index, list_versions

    settings, client = checked_es_client()
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

    settings, client = checked_es_client()
    alias = settings.elasticsearch.index_alias
    live = current_index(client, alias)
    try:
        target = rollback(client, alias)
    except RollbackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{alias}: {live} → {target}")
