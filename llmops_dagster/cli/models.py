"""``llmops-dagster models``: the packaged models, prepared once into the models cache."""

from __future__ import annotations

import time

import click

from llmops_dagster.cli.context import get_settings, log


@click.group()
def models() -> None:
    """The packaged models: prepared once into the models cache (LLMOPS_HOME/models)."""


@models.command("prepare")
def models_prepare() -> None:
    """De-quantise the packaged GGUF generator into the models cache (once; later loads read
    the converted copy in about a second). Set-up runs it, so the first pipeline run does not
    pay the conversion. Prints the converted folder (nothing for a model that needs none)."""
    from llmops_dagster.models.base import GeneratorConfigError
    from llmops_dagster.models.local import prepare_models
    from llmops_dagster.resources.models import ModelsResource

    spec = ModelsResource.from_settings(get_settings()).local_model_spec()
    started = time.perf_counter()
    try:
        folder = prepare_models(spec)
    except GeneratorConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if folder is None:
        log(f"{spec.model}: nothing to convert (not a GGUF file)")
        return
    log(f"{spec.gguf_file}: converted copy ready ({time.perf_counter() - started:.1f} s)")
    click.echo(str(folder))
