"""``llmops-dagster feedback``: review thumbs-downs and corrections before they reach a set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from llmops_dagster.cli.context import resources

if TYPE_CHECKING:
    from llmops_dagster.serving.review import FeedbackReview


@click.group()
def feedback() -> None:
    """Review user feedback: a thumbs-down or a correction reaches the golden or training set
    only when a reviewer accepts it."""


def _feedback_review() -> FeedbackReview:
    from llmops_dagster.serving.review import FeedbackReview

    built = resources()
    serving, datasets = built["serving"], built["datasets"]
    return FeedbackReview(
        Path(serving.store_path),
        Path(datasets.golden_path),
        Path(datasets.train_qa_path),
        train_groups=datasets.train_groups,
    )


@feedback.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also the accepted and rejected ones.")
@click.option("--json", "as_json", is_flag=True)
def feedback_list(show_all: bool, as_json: bool) -> None:
    """Candidates awaiting review (answers with a thumbs-down, a correction or a low score from
    the online evaluation)."""
    found = _feedback_review().candidates(None if show_all else "pending")
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in found], indent=2))
        return
    if not found:
        click.echo("no feedback candidates" + ("" if show_all else " awaiting review"))
        return
    table = Table("trace id", "status", "audience", "bundle", "down", "question", "answer",
                  "correction", "cited documents", "judged low")  # fmt: skip
    for c in found:
        table.add_row(
            c.trace_id,
            c.status,
            ",".join(c.audience),
            c.bundle_version or "base",
            str(c.thumbs_down),
            c.question,
            c.answer,
            c.correction or "[dim]none: accept with --answer[/dim]",
            ", ".join(c.cited_doc_ids) or "-",
            "; ".join(c.judged_low) or "-",
        )
    Console().print(table)


@feedback.command("accept")
@click.argument("trace_id")
@click.option("--answer", default=None, help="Reference answer (default: the user's correction).")
@click.option("--reviewer", default=None, help="Who decided (recorded with the decision).")
@click.option(
    "--to",
    "target",
    type=click.Choice(["auto", "golden", "train"]),
    default="auto",
    show_default=True,
    help="Which set gets the item; auto splits by trace id. Never both: an evaluation must "
    "not score what the adapter was trained on. Training takes only what the training "
    "audience (LLMOPS_TRAIN_GROUPS, default public) may read; auto sends the rest to golden.",
)
@click.option(
    "--doc",
    "doc_ids",
    multiple=True,
    help="A document that answers the question (repeatable; default: the cited documents).",
)
def feedback_accept(
    trace_id: str,
    answer: str | None,
    reviewer: str | None,
    target: str,
    doc_ids: tuple[str, ...],
) -> None:
    """Add TRACE_ID's question with the corrected answer to the golden or training set."""
    from llmops_dagster.serving.review import ReviewError

    try:
        result = _feedback_review().accept(
            trace_id,
            answer=answer,
            reviewer=reviewer,
            to=target,  # type: ignore[arg-type]
            doc_ids=list(doc_ids) or None,
        )
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from exc
    path = result.golden_path if result.target == "golden" else result.train_path
    done = "appended to" if result.appended else "already accepted: unchanged"
    click.echo(f"{trace_id}: {result.item_id} {done} the {result.target} set ({path})")
    if result.note:
        click.echo(f"{trace_id}: {result.note}")
    click.echo(f"golden digest:   {result.golden_digest}")
    click.echo(f"training digest: {result.train_digest}")


@feedback.command("reject")
@click.argument("trace_id")
@click.option("--reviewer", default=None, help="Who decided (recorded with the decision).")
def feedback_reject(trace_id: str, reviewer: str | None) -> None:
    """Record that TRACE_ID's feedback is not used for golden or training data."""
    from llmops_dagster.serving.review import ReviewError

    try:
        _feedback_review().reject(trace_id, reviewer=reviewer)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{trace_id}: rejected")
