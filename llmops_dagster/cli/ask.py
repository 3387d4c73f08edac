"""``llmops-dagster ask``: one question through a RAG bundle (the champion by default), asked of
the running ``llmops-dagster serve`` when one answers, else answered in this process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from llmops_dagster.cli.context import console, get_settings, parse_groups, resources
from llmops_dagster.config import secret_from_env
from llmops_dagster.rag.bundle import CHAMPION, DEFAULT_BUNDLE_MODEL
from llmops_dagster.rag.defaults import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODE
from llmops_dagster.search.retriever import SearchMode
from llmops_dagster.serving.client import (
    ServiceError,
    ask_service,
    check_url,
    loopback_url,
    probe,
)

#: ``--bundle`` values that name what the service answers with: the server serves the
#: champion alias of this registered model only (``serving/wiring.py``).
SERVED_BUNDLE_REFS = frozenset({CHAMPION, f"models:/{DEFAULT_BUNDLE_MODEL}@{CHAMPION}"})


@click.command("ask")
@click.argument("question")
@click.option(
    "--bundle",
    "bundle_ref",
    default="champion",
    show_default=True,
    help="'champion' (the promoted RAG bundle, else the base model), 'base', or a bundle "
    "reference such as models:/llmops-rag-bundle/3 or models:/llmops-rag-bundle@challenger. "
    "Anything but the champion is answered in-process (the service serves the champion only).",
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
    help="In-process only: ask as a member of these groups (comma-separated; default: public "
    "documents only). The service decides the groups from the API key instead.",
)
@click.option(
    "--server",
    "server_url",
    default=None,
    metavar="URL",
    help="The running `llmops-dagster serve` to ask; it must answer. Default: "
    "http://LLMOPS_SERVE_HOST:LLMOPS_SERVE_PORT, asked when it answers, else in-process.",
)
@click.option(
    "--local",
    is_flag=True,
    help="Answer in-process even when a service runs (loads the bundle and models first).",
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="NAME",
    help="The environment variable that holds your API key for the service.",
)
@click.option("--json", "as_json", is_flag=True)
def ask(
    question: str,
    bundle_ref: str,
    k: int | None,
    mode: str | None,
    max_new_tokens: int | None,
    groups: str,
    server_url: str | None,
    local: bool,
    api_key_env: str | None,
    as_json: bool,
) -> None:
    """Answer QUESTION with a RAG bundle (the champion by default), citing chunk ids.

    A bundle fixes everything it was evaluated with — prompt version, retriever settings,
    generator — so `ask` serves exactly what passed; use `--bundle base` to experiment.

    When an `llmops-dagster serve` answers at --server (default: the configured host and
    port), the question goes to it and the answer comes in the time of one generation;
    otherwise it is answered in this process, which first loads the bundle and models. The
    last line says which answered. An error from the service (401, 403, 429, 503, ...) is
    reported and never retried in-process: who may read what is the service's decision.
    """
    from llmops_dagster.access import AccessError, Principal

    try:
        principal = Principal("cli", frozenset(parse_groups(groups)))
    except AccessError as exc:
        raise click.BadParameter(str(exc), param_hint="--groups") from exc
    api_key = secret_from_env(api_key_env)
    if api_key_env and api_key is None:
        raise click.BadParameter(f"{api_key_env} is unset or empty", param_hint="--api-key-env")
    reason = _why_not_the_service(bundle_ref, local=local, k=k, mode=mode, tokens=max_new_tokens)
    url = None
    if reason is None:
        if server_url is None:
            serving = get_settings().serving
            url = loopback_url(serving.host, serving.port)
        else:
            try:
                url = check_url(server_url)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--server") from exc
        found = probe(url)
        if found.running:
            if groups.strip():
                console.print(
                    "[yellow]--groups is for in-process answers: the service uses "
                    "the API key's groups[/yellow]"
                )
            _answer_by_service(url, question, api_key=api_key, as_json=as_json)
            return
        if server_url is not None:
            # Asked for that service by name: answering from this machine's own stores
            # instead could be another deployment's data, so say so rather than fall back.
            raise click.ClickException(
                f"{found.absence()}; leave out --server, or pass --local, to answer in-process"
            )
        reason = found.absence()
    _answer_in_process(
        question,
        principal,
        bundle_ref=bundle_ref,
        k=k,
        mode=mode,
        max_new_tokens=max_new_tokens,
        as_json=as_json,
        reason=reason,
        url=url,
    )


def _why_not_the_service(
    bundle_ref: str, *, local: bool, k: int | None, mode: str | None, tokens: int | None
) -> str | None:
    """Why this question cannot go to the service (None: it can): the service answers with
    its champion bundle as evaluated, nothing else."""
    if local:
        return "--local"
    if bundle_ref not in SERVED_BUNDLE_REFS:
        return f"--bundle {bundle_ref}: the service answers with the champion only"
    options = (("--k", k), ("--mode", mode), ("--max-new-tokens", tokens))
    given = [name for name, value in options if value is not None]
    if given:
        return f"{', '.join(given)}: the service answers with its bundle's settings"
    return None


@dataclass(frozen=True)
class _Shown:
    """What the text output shows, from either path."""

    text: str
    cited: list[str]
    inferred: bool
    retrieved: list[tuple[str, str, float]]  # chunk id, doc id, score
    bundle_uri: str | None
    model_id: str
    prompt: str  # name@version
    mode: str
    k: int
    retrieve_ms: float
    generate_ms: float
    tokens: tuple[int, int]  # prompt, completion
    guardrails: str | None = None

    def print(self, answered_by: str) -> None:
        # Results go to stdout unwrapped (a pipe gets whole lines) and markup-escaped: an
        # answer or a chunk id may contain [brackets].
        out = Console(soft_wrap=True, highlight=False)
        out.print(f"[bold]{escape(self.text.strip())}[/bold]\n")
        cites = ", ".join(self.cited) or "none"
        out.print(escape(f"cited: {cites}{' (inferred)' if self.inferred else ''}"))
        for chunk_id, doc_id, score in self.retrieved:
            out.print(f"  [dim]{escape(chunk_id)}[/dim] {escape(doc_id)} ({score:.3f})")
        if self.guardrails:
            out.print(escape(f"guardrails: {self.guardrails}"))
        out.print(
            escape(
                f"bundle {self.bundle_uri or 'none (base model)'} · model {self.model_id} · "
                f"prompt {self.prompt} · {self.mode} k={self.k} · "
                f"retrieve {self.retrieve_ms:.0f} ms · generate {self.generate_ms:.0f} ms · "
                f"tokens {self.tokens[0]}+{self.tokens[1]}"
            )
        )
        out.print(escape(answered_by))


def _answer_by_service(url: str, question: str, *, api_key: str | None, as_json: bool) -> None:
    with console.status(f"asking the service at {url} ..."):
        try:
            body = ask_service(url, question, api_key=api_key)
        except ServiceError as exc:
            message = _service_error(exc, api_key_given=api_key is not None)
            raise click.ClickException(message) from exc
    try:
        shown = _from_service(body)
        by = f"{url} (as {body['principal']}, trace {body['trace_id']})"
    except (KeyError, TypeError, ValueError) as exc:
        raise click.ClickException(
            f"the service at {url} answered 200 with an unexpected body ({exc!r} missing or "
            "malformed): is it the same llmops-dagster version?"
        ) from exc
    if as_json:
        # `answer` and `bundle_uri` are where the in-process payload has them too.
        payload = {**body, "bundle_uri": body["bundle"]["uri"]}
        payload |= {"answered_by": "service", "service_url": url}
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    shown.print(f"answered by the running service at {by}")


def _service_error(exc: ServiceError, *, api_key_given: bool) -> str:
    """The service's refusal as one line, with what the caller can do about it."""
    text = exc.describe()
    if exc.status == 401:
        text += (
            "; the key in --api-key-env was refused"
            if api_key_given
            else "; name the variable that holds your key with --api-key-env NAME"
        )
    # Not retried in-process: the service decides who may read what, and a caller it turned
    # away must not get the answer another way (nor a busy service twice the load).
    return f"{text} (not answered in-process)"


def _from_service(body: dict[str, Any]) -> _Shown:
    bundle, timings, guards = body["bundle"], body["timings_ms"], body.get("guardrails") or {}
    return _Shown(
        text=body["answer"],
        cited=[c["chunk_id"] for c in body["citations"]],
        inferred=bool(body["citations_inferred"]),
        retrieved=[(c["chunk_id"], c["doc_id"], float(c["score"])) for c in body["retrieved"]],
        bundle_uri=bundle["uri"],
        model_id=bundle["model_id"],
        prompt=bundle["prompt_version"],
        mode=bundle["retrieval_mode"],
        k=int(bundle["k"]),
        retrieve_ms=float(timings["retrieve"]),
        generate_ms=float(timings["generate"]),
        tokens=(int(body["tokens"]["prompt"]), int(body["tokens"]["completion"])),
        guardrails=_guardrails(guards),
    )


def _guardrails(guards: dict[str, Any]) -> str | None:
    """The service's guardrail findings in a few words (None: nothing tripped)."""
    parts = []
    if guards.get("refused"):
        parts.append(f"refused ({guards['refused']})")
    if guards.get("question_flags"):
        parts.append(f"question flagged ({', '.join(guards['question_flags'])})")
    if guards.get("chunk_flags"):
        parts.append(f"chunks flagged ({', '.join(sorted(guards['chunk_flags']))})")
    if guards.get("redacted"):
        counts = ", ".join(f"{kind} {n}" for kind, n in sorted(guards["redacted"].items()))
        parts.append(f"redacted ({counts})")
    return "; ".join(parts) or None


def _answer_in_process(
    question: str,
    principal: Any,
    *,
    bundle_ref: str,
    k: int | None,
    mode: str | None,
    max_new_tokens: int | None,
    as_json: bool,
    reason: str,
    url: str | None,
) -> None:
    with console.status("loading the bundle and models ..."):
        pipeline = _pipeline(bundle_ref, k=k, mode=mode, max_new_tokens=max_new_tokens)
    with console.status("retrieving and generating ..."):
        result = pipeline.answer(question, principal=principal)
    if as_json:
        payload = {**result.to_dict(), "answer": result.text, "bundle_uri": pipeline.bundle_uri}
        payload["ranked"] = [chunk.chunk_id for chunk in result.ranked]
        payload["retrieval"] = {"mode": pipeline.retrieval.mode, "k": pipeline.retrieval.k}
        payload |= {"answered_by": "in-process", "service_url": url, "in_process_reason": reason}
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    _Shown(
        text=result.text,
        cited=list(result.cited_chunk_ids),
        inferred=result.citations_inferred,
        retrieved=[(hit.chunk_id, hit.doc_id, hit.score) for hit in result.retrieved],
        bundle_uri=pipeline.bundle_uri,
        model_id=result.model_id,
        prompt=f"{result.prompt_name}@{result.prompt_version}",
        mode=result.mode,
        k=result.k,
        retrieve_ms=result.retrieve_ms,
        generate_ms=result.generate_ms,
        tokens=(result.prompt_tokens, result.completion_tokens),
    ).print(f"answered in-process ({reason})")


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
