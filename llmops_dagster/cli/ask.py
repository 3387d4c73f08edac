"""``llmops-dagster ask``: one question through a RAG bundle (the champion by default)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

from llmops_dagster.cli.context import console, get_settings, parse_groups, resources
from llmops_dagster.rag.defaults import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODE
from llmops_dagster.search.retriever import SearchMode


@click.command("ask")
@click.argument("question")
@click.option(
    "--bundle",
    "bundle_ref",
    default="champion",
    show_default=True,
    help="'champion' (the promoted RAG bundle, else the base model), 'base', or a bundle "
    "reference such as models:/llmops-rag-bundle/3 or models:/llmops-rag-bundle@challenger.",
)
@click.option(
    "--k", type=int, default=None, help=f"Chunks in the prompt (base only; default {DEFAULT_K})."
)
@click.option(
    "--mode",
    default=None,
    type=click.Choice([mode.value for mode in SearchMode]),
    help=f"Search mode (base only; default {DEFAULT_MODE}).",
)
@click.option(
    "--max-new-tokens", type=int, default=None, help=f"Base only; default {DEFAULT_MAX_NEW_TOKENS}."
)
@click.option(
    "--groups",
    default="",
    help="Ask as a member of these groups (comma-separated); default: public documents only.",
)
@click.option("--json", "as_json", is_flag=True)
def ask(
    question: str,
    bundle_ref: str,
    k: int | None,
    mode: str | None,
    max_new_tokens: int | None,
    groups: str,
    as_json: bool,
) -> None:
    """Answer QUESTION with a RAG bundle (the champion by default), citing chunk ids.

    A bundle fixes everything it was evaluated with — prompt version, retriever settings,
    generator — so `ask` serves exactly what passed; use `--bundle base` to experiment.
    """
    from llmops_dagster.access import AccessError, Principal

    try:
        principal = Principal("cli", frozenset(parse_groups(groups)))
    except AccessError as exc:
        raise click.BadParameter(str(exc), param_hint="--groups") from exc
    with console.status("loading the bundle and models ..."):
        pipeline = _pipeline(bundle_ref, k=k, mode=mode, max_new_tokens=max_new_tokens)
    with console.status("retrieving and generating ..."):
        result = pipeline.answer(question, principal=principal)
    if as_json:
        payload = {**result.to_dict(), "bundle_uri": pipeline.bundle_uri}
        payload["ranked"] = [chunk.chunk_id for chunk in result.ranked]
        payload["retrieval"] = {"mode": pipeline.retrieval.mode, "k": pipeline.retrieval.k}
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    out = Console()
    out.print(f"[bold]{result.text.strip()}[/bold]\n")
    cites = ", ".join(result.cited_chunk_ids) or "none"
    out.print(f"cited: {cites}{' (inferred)' if result.citations_inferred else ''}")
    for hit in result.retrieved:
        out.print(f"  [dim]{hit.chunk_id}[/dim] {hit.doc_id} ({hit.score:.3f})")
    out.print(
        f"bundle {pipeline.bundle_uri or 'none (base model)'} · model {result.model_id} · "
        f"prompt {result.prompt_name}@{result.prompt_version} · {result.mode} k={result.k} · "
        f"retrieve {result.retrieve_ms:.0f} ms · generate {result.generate_ms:.0f} ms · "
        f"tokens {result.prompt_tokens}+{result.completion_tokens}"
    )


def _pipeline(
    bundle_ref: str, *, k: int | None, mode: str | None, max_new_tokens: int | None
) -> Any:
    """The ``RagPipeline`` of ``--bundle``: a registered bundle as evaluated, or the base model
    with the given retrieval settings (``champion`` with no champion yet falls back to it)."""
    from llmops_dagster.models.base import GeneratorError
    from llmops_dagster.rag.bundle import BundleError, current_champion, load_bundle
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.rag.prompts import PromptError
    from llmops_dagster.resources import build_bundle_pipeline, build_rag_pipeline
    from llmops_dagster.search.client import ElasticsearchUnavailable
    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable

    built = resources(get_settings())
    models, mlflow, es = built["models"], built["mlflow"], built["elasticsearch"]
    try:
        found = None
        if bundle_ref == "champion":
            found = current_champion(mlflow.client())
        elif bundle_ref != "base":
            found = load_bundle(mlflow.client(), bundle_ref)
        if found is not None and (k or mode or max_new_tokens):
            raise click.ClickException(
                f"{found.uri} fixes k, mode and max_new_tokens (what was evaluated); "
                "use --bundle base to try other settings"
            )
        if found is not None:
            return build_bundle_pipeline(es, models, mlflow, found.bundle, bundle_uri=found.uri)
        if bundle_ref == "champion":
            console.print("[yellow]no champion bundle yet: answering with the base model[/yellow]")
        return build_rag_pipeline(
            es,
            models,
            mlflow,
            # The base bundle (rag/defaults.py), as the server answers before a champion.
            retrieval=RetrievalSettings(mode=mode or DEFAULT_MODE, k=k or DEFAULT_K),
            max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        )
    except (
        BundleError,
        GeneratorError,
        PromptError,
        ElasticsearchUnavailable,
        MlflowUnavailable,
    ) as exc:
        raise click.ClickException(str(exc)) from exc
