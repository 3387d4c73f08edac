"""``llmops-dagster``: local services, the Dagster UI, and the demo."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

import llmops_dagster
from llmops_dagster.config import Settings, apply_offline_env_defaults

if TYPE_CHECKING:
    from llmops_dagster.tracking.trace import LineageChain

console = Console(stderr=True)


def get_settings() -> Settings:
    return Settings()


def _log(message: str) -> None:
    console.print(f"[dim]·[/dim] {message}")


@click.group()
@click.version_option(llmops_dagster.__version__)
def main() -> None:
    """llmops-dagster: a Dagster code location for the whole LLMOps loop."""
    # This process starts here: offline defaults before any library reads them.
    apply_offline_env_defaults()


# --------------------------------------------------------------------------------------------
# services
# --------------------------------------------------------------------------------------------


@main.group()
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
        home = fetch_distribution(settings.es_dist_dir, settings.local_node.version, log=_log)
        # Built and installed once here, so set-up does it and node starts only check it.
        ensure_plugin(home, java_home=settings.local_node.java_home, log=_log)
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
        status = elasticsearch_up(settings, log=_log, nodes=nodes)
        store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
    except (ElasticsearchSetupError, ElasticsearchUnavailable, MlflowUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    _log(f"MLflow store: {store.tracking_uri}")
    if nodes > 1:
        for node in status["nodes"]:
            _log(f"{node['name']}: {node['url']} (pid {node['pid']})")
        _log(
            "Set LLMOPS_ES_REPLICAS=1 for the indices you build on it, so every shard has a "
            "copy on a second node: with 0 replicas a stopped node takes its shards with it."
        )
    click.echo(f"ELASTICSEARCH_URL={status['url']}")


@services.command("down")
def services_down() -> None:
    """Stop the local Elasticsearch node (or every node of the local cluster) by its pid."""
    from llmops_dagster.services.local import elasticsearch_down

    stopped = elasticsearch_down(get_settings(), log=_log)
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
        Console().print(table)
    healthy = status["elasticsearch"].get("healthy") and status["mlflow"]["healthy"]
    sys.exit(0 if healthy else 1)


# --------------------------------------------------------------------------------------------
# index
# --------------------------------------------------------------------------------------------


@main.group()
def index() -> None:
    """The Elasticsearch alias and its versioned indices."""


def _resources(settings: Settings) -> dict:
    """The code location's resources, built from the same settings (secrets resolved)."""
    from llmops_dagster.resources import build_resources

    return build_resources(settings, with_dlt=False, resolve_secrets=True)


def _checked_client():
    from llmops_dagster.search.client import ElasticsearchUnavailable

    settings = get_settings()
    elasticsearch = _resources(settings)["elasticsearch"]
    try:
        client = elasticsearch.get_client()
    except ElasticsearchUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    return settings, client


@index.command("status")
def index_status() -> None:
    """The alias, the index it points to, and the versions kept for rollback."""
    from llmops_dagster.search.aliases import current_index, list_versions

    settings, client = _checked_client()
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

    settings, client = _checked_client()
    alias = settings.elasticsearch.index_alias
    live = current_index(client, alias)
    try:
        target = rollback(client, alias)
    except RollbackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{alias}: {live} → {target}")


# --------------------------------------------------------------------------------------------
# RAG
# --------------------------------------------------------------------------------------------


@main.command("ask")
@click.argument("question")
@click.option(
    "--bundle",
    "bundle_ref",
    default="champion",
    show_default=True,
    help="'champion' (the promoted RAG bundle, else the base model), 'base', or a bundle "
    "reference such as models:/llmops-rag-bundle/3 or models:/llmops-rag-bundle@challenger.",
)
@click.option("--k", type=int, default=None, help="Chunks in the prompt (base only; default 3).")
@click.option(
    "--mode",
    default=None,
    type=click.Choice(["bm25", "knn", "hybrid_rrf", "hybrid_linear", "server_rrf"]),
    help="Search mode (base only; default hybrid_rrf).",
)
@click.option("--max-new-tokens", type=int, default=None, help="Base only; default 96.")
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
    from llmops_dagster.models.base import GeneratorError
    from llmops_dagster.rag.bundle import BundleError, current_champion, load_bundle
    from llmops_dagster.rag.pipeline import RetrievalSettings
    from llmops_dagster.rag.prompts import PromptError
    from llmops_dagster.resources import build_bundle_pipeline, build_rag_pipeline
    from llmops_dagster.search.client import ElasticsearchUnavailable
    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable

    resources = _resources(get_settings())
    models, mlflow, es = resources["models"], resources["mlflow"], resources["elasticsearch"]
    with console.status("loading the bundle and models ..."):
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
                pipeline = build_bundle_pipeline(
                    es, models, mlflow, found.bundle, bundle_uri=found.uri
                )
            else:
                if bundle_ref == "champion":
                    console.print(
                        "[yellow]no champion bundle yet: answering with the base model[/yellow]"
                    )
                pipeline = build_rag_pipeline(
                    es,
                    models,
                    mlflow,
                    retrieval=RetrievalSettings(mode=mode or "hybrid_rrf", k=k or 3),
                    max_new_tokens=max_new_tokens or 96,
                )
        except (
            BundleError,
            GeneratorError,
            PromptError,
            ElasticsearchUnavailable,
            MlflowUnavailable,
        ) as exc:
            raise click.ClickException(str(exc)) from exc
    from llmops_dagster.access import AccessError, Principal

    try:
        principal = Principal("cli", frozenset(g.strip() for g in groups.split(",") if g.strip()))
    except AccessError as exc:
        raise click.BadParameter(str(exc), param_hint="--groups") from exc
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


@main.command("serve")
@click.option("--host", default=None, help="Default 127.0.0.1 (LLMOPS_SERVE_HOST).")
@click.option("--port", type=int, default=None, help="Default 8000 (LLMOPS_SERVE_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the champion bundle over HTTP: POST /v1/answer, POST /v1/feedback, GET /healthz,
    GET /metrics, a web page at /, the OpenAPI schema at /docs.

    Every answer is an MLflow trace (experiment LLMOPS_TRACE_EXPERIMENT); when the champion
    alias moves, the new bundle is loaded in the background and swapped in between requests.
    """
    import uvicorn

    from llmops_dagster.models.base import GeneratorError
    from llmops_dagster.rag.bundle import BundleError
    from llmops_dagster.rag.prompts import PromptError
    from llmops_dagster.search.client import ElasticsearchUnavailable
    from llmops_dagster.serving.auth import KeyFileError
    from llmops_dagster.serving.pricing import PriceTableError
    from llmops_dagster.serving.tracing import fail_fast_tracking_defaults
    from llmops_dagster.serving.wiring import build_app
    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable

    fail_fast_tracking_defaults()
    settings = get_settings()
    host = host or settings.serving.host
    port = port or settings.serving.port
    with console.status("loading the champion bundle and models ..."):
        try:
            app = build_app(settings)
        except (
            BundleError,
            GeneratorError,
            PromptError,
            PriceTableError,
            KeyFileError,
            ElasticsearchUnavailable,
            MlflowUnavailable,
        ) as exc:
            raise click.ClickException(str(exc)) from exc
    served = app.state.service.holder.current
    auth = "API keys required" if app.state.keys.enabled else "no API keys: public documents only"
    bundle = served.uri or "the base model (no champion yet)"
    _log(f"serving {bundle} on http://{host}:{port}; {auth}")
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


@main.group()
def keys() -> None:
    """API keys of the HTTP service (stored hashed in LLMOPS_API_KEYS)."""


def _keys_path():
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
        record, secret = add_key(_keys_path(), name, [g for g in groups.split(",") if g])
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    _log(f"key {record.name} (groups: {', '.join(record.groups) or 'none'}) — shown only now:")
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
    _log(f"revoked {name}")


@main.group()
def bundle() -> None:
    """RAG bundles in the MLflow registry: status, manual approval, rollback."""


def _bundle_client():
    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable

    try:
        return _resources(get_settings())["mlflow"].client()
    except MlflowUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@bundle.command("status")
def bundle_status() -> None:
    """Which bundle versions hold `champion` and `challenger`, and what they pin."""
    from mlflow.exceptions import MlflowException

    from llmops_dagster.rag.bundle import CHALLENGER, CHAMPION, DEFAULT_BUNDLE_MODEL, load_bundle

    client = _bundle_client()
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
        move = approve_bundle(_bundle_client(), DEFAULT_BUNDLE_MODEL, version, approver=approver)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"champion: v{move.previous_version or '-'} → v{move.new_version} (by {approver})")


@bundle.command("rollback")
def bundle_rollback() -> None:
    """Point `champion` back at the bundle it replaced (recorded at promotion)."""
    from llmops_dagster.evaluate.gate import RollbackError
    from llmops_dagster.rag.bundle import DEFAULT_BUNDLE_MODEL, rollback_bundle

    try:
        move = rollback_bundle(_bundle_client(), DEFAULT_BUNDLE_MODEL)
    except RollbackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"champion: v{move.previous_version} → v{move.new_version}")


@main.command("lineage")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def lineage(ref: str, as_json: bool) -> None:
    """The chain behind REF: a served answer's trace id (tr-...), an MLflow run id,
    models:/<name>/<version> or models:/<name>@alias.

    Exits 1 when a link of the chain cannot be resolved.
    """

    from mlflow.tracking import MlflowClient

    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable, ensure_mlflow
    from llmops_dagster.tracking.trace import LineageError, trace

    settings = get_settings()
    try:
        store = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
        client = MlflowClient(store.tracking_uri)
        if ref.startswith("tr-"):
            _answer_lineage(client, ref, as_json)
            return
        chain = trace(client, ref)
    except (MlflowUnavailable, LineageError) as exc:
        raise click.ClickException(str(exc)) from exc
    _print_chain(ref, chain, as_json)
    sys.exit(0 if chain.complete else 1)


def _answer_lineage(client: object, trace_id: str, as_json: bool) -> None:
    from dataclasses import asdict

    from llmops_dagster.tracking.answer_lineage import answer_lineage

    es = _resources(get_settings())["elasticsearch"].get_client()  # connects lazily
    found = answer_lineage(client, trace_id, es)
    if as_json:
        click.echo(json.dumps(asdict(found), indent=2))
        sys.exit(0 if found.complete else 1)
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
    sys.exit(0 if found.complete else 1)


def _print_chain(ref: str, chain: LineageChain, as_json: bool) -> None:
    from dataclasses import asdict

    if as_json:
        click.echo(json.dumps(asdict(chain), indent=2))
    else:
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


@main.group()
def feedback() -> None:
    """Review user feedback: a thumbs-down or a correction reaches the golden or training set
    only when a reviewer accepts it."""


def _feedback_review():
    from pathlib import Path

    from llmops_dagster.serving.review import FeedbackReview

    resources = _resources(get_settings())
    serving, corpus = resources["serving"], resources["corpus"]
    return FeedbackReview(
        Path(serving.store_path),
        Path(corpus.golden_path),
        Path(corpus.train_qa_path),
        train_groups=corpus.train_groups,
    )


@feedback.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also the accepted and rejected ones.")
@click.option("--json", "as_json", is_flag=True)
def feedback_list(show_all: bool, as_json: bool) -> None:
    """Candidates awaiting review (answers with a thumbs-down or a correction)."""
    found = _feedback_review().candidates(None if show_all else "pending")
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in found], indent=2))
        return
    if not found:
        click.echo("no feedback candidates" + ("" if show_all else " awaiting review"))
        return
    table = Table("trace id", "status", "audience", "bundle", "down", "question", "answer",
                  "correction", "cited documents")  # fmt: skip
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


# --------------------------------------------------------------------------------------------
# Dagster
# --------------------------------------------------------------------------------------------


@main.command("dev")
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def dev(port: int, host: str) -> None:
    """Run `dagster dev` on this code location; Ctrl-C / SIGTERM stop it cleanly."""
    from llmops_dagster.services.dagster_dev import run_dagster_dev
    from llmops_dagster.services.local import dagster_home

    sys.exit(run_dagster_dev(dagster_home(), host=host, port=port))


@main.command("demo")
@click.option("--keep-services/--stop-services", default=True, show_default=True)
def demo(keep_services: bool) -> None:
    """Start the services and materialize the whole asset graph on the sample corpus."""
    from llmops_dagster.demo import run_demo

    sys.exit(run_demo(get_settings(), keep_services=keep_services, log=_log))


if __name__ == "__main__":
    main()
