"""``llmops-dagster lineage``: the chain behind an answer, a run or a registered version."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

import click
from rich.console import Console

from llmops_dagster.cli.context import resources

if TYPE_CHECKING:
    from llmops_dagster.tracking.answer_lineage import AnswerLineage
    from llmops_dagster.tracking.trace import LineageChain


@click.command("lineage")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def lineage(ref: str, as_json: bool) -> None:
    """The chain behind REF: a served answer's trace id (tr-...), an MLflow run id,
    models:/<name>/<version> or models:/<name>@alias.

    Exits 1 when a link of the chain cannot be resolved.
    """
    from llmops_dagster.tracking.answer_lineage import answer_lineage
    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable
    from llmops_dagster.tracking.trace import LineageError, trace

    built = resources()
    try:
        client = built["mlflow"].client()
        if ref.startswith("tr-"):
            es = built["elasticsearch"].get_client()  # connects lazily
            found = answer_lineage(client, ref, es)
        else:
            chain = trace(client, ref)
    except (MlflowUnavailable, LineageError) as exc:
        raise click.ClickException(str(exc)) from exc
    if ref.startswith("tr-"):
        _print_answer(ref, found, as_json)
        sys.exit(0 if found.complete else 1)
    _print_chain(ref, chain, as_json)
    sys.exit(0 if chain.complete else 1)


def _print_answer(trace_id: str, found: AnswerLineage, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(asdict(found), indent=2))
        return
    out = Console()
    out.print(f"[bold]answer {trace_id}[/bold]\n  question: {found.question}")
    out.print(f"  answer:   {found.answer[:200]}")
    bundle = found.bundle_uri or "none (the base model answered)"
    out.print(f"\n[bold cyan]bundle[/bold cyan] {bundle}")
    for label, value in (
        ("prompt", f"{found.prompt_uri} ({found.prompt_version})"),
        ("model", found.model_id),
        ("adapter", found.adapter_uri or "none (base model)"),
        ("embedding model", found.embedding_model_id),
        ("index", f"{found.index_name} (alias {found.index_alias})"),
    ):
        out.print(f"    {label}: {value}")
    out.print("\n[bold cyan]chunks[/bold cyan] (rank, cited, source document)")
    for chunk in found.chunks:
        mark = "cited" if chunk.cited else "     "
        where = f"{chunk.doc_id} · {chunk.uri}" if chunk.found else "not looked up / missing"
        out.print(f"    {chunk.rank}. {mark} {chunk.chunk_id}  ← {where}")
    for problem in found.problems:
        out.print(f"[red]{problem}[/red]")
    if found.bundle_chain is not None:
        _print_chain(found.bundle_uri, found.bundle_chain, False)


def _print_chain(ref: str, chain: LineageChain, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(asdict(chain), indent=2))
        return
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
