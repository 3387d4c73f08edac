"""Language models behind one small protocol (:class:`~llmops_dagster.models.base.Generator`).

- :mod:`.spec` — what to load (frozen specs a resource builds; the library reads no environment);
- :mod:`.base` — ``Generation``, the ``Generator`` protocol, the errors;
- :mod:`.source` — resolving a model location, the GGUF → safetensors cache, device and dtype;
- :mod:`.local` — loading (once per process) and the one local generate loop;
- :mod:`.openai_client` — the OpenAI-compatible client (generator and judge);
- :mod:`.registry` — LoRA adapters in the MLflow registry (tags, download, checks, loading).

Importing this package is light: torch, transformers, peft, mlflow and openai are imported when
a model is loaded or an endpoint called. :func:`load_generator` is the one entry point for
resources and the CLI: a serving config is a :class:`GeneratorSpec` plus, for the local
backend, an optional registry URI (e.g. ``models:/llmops-generator-lora@champion``).
"""

from __future__ import annotations

from typing import Any

from llmops_dagster.models.base import Generator, GeneratorConfigError
from llmops_dagster.models.spec import GeneratorSpec


def load_generator(
    spec: GeneratorSpec,
    *,
    adapter_uri: str | None = None,
    tracking_uri: str | None = None,
    **kwargs: Any,
) -> Generator:
    """The generator ``spec`` names.

    ``openai`` → :class:`~.openai_client.OpenAICompatibleGenerator` (an adapter URI is an
    error: adapters are served locally). ``local`` → the base model, or base + the adapter at
    ``adapter_uri`` (``models:/name/3`` or ``models:/name@alias``, read from ``tracking_uri``).
    ``kwargs`` go to the backend's generator class (e.g. ``batch_size`` for the local one).
    """
    if spec.backend == "openai":
        if adapter_uri:
            raise GeneratorConfigError(
                f"adapter {adapter_uri} cannot be served by the OpenAI-compatible backend: "
                "LoRA adapters are loaded on the local base model (generator backend local)"
            )
        if spec.openai is None:
            raise GeneratorConfigError(
                "generator backend openai needs an endpoint (base URL and model name)"
            )
        from llmops_dagster.models.openai_client import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator(spec.openai, **kwargs)
    if spec.backend != "local":
        raise GeneratorConfigError(f"generator backend {spec.backend!r}: expected local or openai")
    if spec.local is None:
        raise GeneratorConfigError("generator backend local needs a local model spec")
    if not adapter_uri:
        from llmops_dagster.models.local import load_local_generator

        return load_local_generator(spec.local, **kwargs)
    from llmops_dagster.models.registry import load_registered_generator, parse_model_uri

    parse_model_uri(adapter_uri)  # a malformed URI is the first thing to report
    if not tracking_uri:
        raise GeneratorConfigError(
            f"adapter {adapter_uri} needs the MLflow tracking URI of its registry"
        )
    return load_registered_generator(spec.local, tracking_uri, adapter_uri, **kwargs)


def clear_model_cache() -> None:
    """Forget loaded models (tests, or to free memory in a long-lived process)."""
    from llmops_dagster.models.local import MODELS

    MODELS.clear()


__all__ = ["GeneratorSpec", "clear_model_cache", "load_generator"]
