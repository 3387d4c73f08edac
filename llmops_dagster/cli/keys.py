"""``llmops-dagster keys``: API keys of the HTTP service (stored hashed)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from llmops_dagster.cli.context import get_settings, log, parse_groups


@click.group()
def keys() -> None:
    """API keys of the HTTP service (stored hashed in LLMOPS_API_KEYS)."""


def _keys_path() -> Path:
    path = get_settings().serving.api_keys_path
    if path is None:
        raise click.ClickException("set LLMOPS_API_KEYS to the key file's path first")
    return path


@keys.command("add")
@click.argument("name")
@click.option("--groups", default="", help="Comma-separated groups, e.g. hr,ops.")
def keys_add(name: str, groups: str) -> None:
    """Create a key for NAME and print it once (only its hash is stored)."""
    from llmops_dagster.serving.auth import KeyFileError, add_key

    try:
        record, secret = add_key(_keys_path(), name, parse_groups(groups))
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    log(f"key {record.name} (groups: {', '.join(record.groups) or 'none'}) — shown only now:")
    click.echo(secret)


@keys.command("list")
def keys_list() -> None:
    """Key names, groups and creation dates (never the keys)."""
    from llmops_dagster.serving.auth import KeyFileError, read_keys

    try:
        records = read_keys(_keys_path())
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table("name", "groups", "created")
    for record in records:
        table.add_row(record.name, ", ".join(record.groups), record.created_at)
    Console().print(table)


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Remove NAME's key; a running server stops accepting it at once."""
    from llmops_dagster.serving.auth import KeyFileError, revoke_key

    try:
        revoke_key(_keys_path(), name)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    log(f"revoked {name}")
