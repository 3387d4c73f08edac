"""``llmops-dagster golden``: review drafted golden candidates before they reach the golden set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from llmops_dagster.cli.context import resources

if TYPE_CHECKING:
    from llmops_dagster.evaluate.golden_candidates import GoldenReview


@click.group()
def golden() -> None:
    """Review golden candidates drafted from the indexed chunks (the golden_candidates asset):
    one reaches the golden set, and re-evaluation, only when a reviewer accepts it."""


def _golden_review() -> GoldenReview:
    from llmops_dagster.evaluate.golden_candidates import CANDIDATES_FILE, GoldenReview

    datasets = resources()["datasets"]
    return GoldenReview(Path(datasets.datasets_dir) / CANDIDATES_FILE, Path(datasets.golden_path))


@golden.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also the accepted and rejected ones.")
@click.option("--json", "as_json", is_flag=True)
def golden_list(show_all: bool, as_json: bool) -> None:
    """Candidates awaiting review."""
    from llmops_dagster.evaluate.golden_candidates import GoldenReviewError

    try:
        found = _golden_review().candidates(None if show_all else "pending")
    except GoldenReviewError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in found], indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo(
            "no golden candidates"
            + ("" if show_all else " awaiting review")
            + " (materialize golden_candidates to draft them)"
        )
        return
    table = Table("id", "status", "groups", "question", "reference answer", "document")
    for c in found:
        table.add_row(
            c.id,
            c.status,
            ",".join(c.item.groups) or "public",
            c.item.question,
            c.item.reference_answer or "",
            ", ".join(c.item.relevant_doc_ids),
        )
    Console().print(table)


@golden.command("accept")
@click.argument("candidate_id")
@click.option("--reviewer", default=None, help="Who decided (recorded with the decision).")
def golden_accept(candidate_id: str, reviewer: str | None) -> None:
    """Append CANDIDATE_ID to the golden set (a new digest: the champion is re-evaluated)."""
    from llmops_dagster.evaluate.golden_candidates import GoldenReviewError

    review = _golden_review()
    try:
        _, digest = review.accept(candidate_id, reviewer=reviewer)
    except GoldenReviewError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{candidate_id}: appended to the golden set ({review.golden_path})")
    click.echo(f"golden digest: {digest}")


@golden.command("reject")
@click.argument("candidate_id")
@click.option("--reviewer", default=None, help="Who decided (recorded with the decision).")
def golden_reject(candidate_id: str, reviewer: str | None) -> None:
    """Record that CANDIDATE_ID is not used (it is not drafted again)."""
    from llmops_dagster.evaluate.golden_candidates import GoldenReviewError

    try:
        _golden_review().reject(candidate_id, reviewer=reviewer)
    except GoldenReviewError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{candidate_id}: rejected")
