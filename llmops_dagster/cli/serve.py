"""``llmops-dagster serve``: the champion bundle over HTTP."""

from __future__ import annotations

import click

from llmops_dagster.cli.context import console, get_settings, log


@click.command("serve")
@click.option("--host", default=None, help="Default 127.0.0.1 (LLMOPS_SERVE_HOST).")
@click.option("--port", type=int, default=None, help="Default 8000 (LLMOPS_SERVE_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the champion bundle over HTTP: POST /v1/answer, POST /v1/feedback, GET /healthz,
    GET /metrics, a web page at /, the OpenAPI schema at /docs.

    Every answer is an MLflow trace (experiment LLMOPS_TRACE_EXPERIMENT); when the champion
    alias moves, the new bundle is loaded in the background and swapped in between requests.
    """
    import uvicorn

    from llmops_dagster.config import apply_server_env_defaults
    from llmops_dagster.models.base import GeneratorError
    from llmops_dagster.rag.bundle import BundleError
    from llmops_dagster.rag.prompts import PromptError
    from llmops_dagster.search.client import ElasticsearchUnavailable
    from llmops_dagster.serving.auth import KeyFileError
    from llmops_dagster.serving.pricing import PriceTableError
    from llmops_dagster.serving.wiring import build_app
    from llmops_dagster.tracking.mlflow_store import MlflowUnavailable

    apply_server_env_defaults()  # this process is a server: MLflow's HTTP client fails fast
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
    log(f"serving {bundle} on http://{host}:{port}; {auth}")
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
