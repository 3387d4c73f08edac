"""LoRA adapters in the MLflow model registry: tags, registering, downloading, checking, loading.

Training (:mod:`llmops_dagster.train.lora`) registers adapter versions with the tags defined
here; serving resolves ``models:/<name>/<version>`` or ``models:/<name>@<alias>``, downloads the
adapter folder once per machine (published atomically under ``<cache_dir>/adapters``), checks it
was trained on the configured base, and loads base + adapter once per process.

Every MLflow call names its tracking URI: nothing depends on MLflow's process-global state.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_dagster.files import publish_dir
from llmops_dagster.models.base import AdapterMismatchError, GeneratorConfigError
from llmops_dagster.models.local import (
    MODELS,
    LoadedModel,
    LocalTransformersGenerator,
    base_fingerprint,
    load_base_model,
)
from llmops_dagster.models.source import resolve_model_source, safe_name
from llmops_dagster.models.spec import LocalModelSpec

#: Registered model that holds the generator's adapters (the gate moves its ``champion``).
DEFAULT_REGISTERED_MODEL = "llmops-generator-lora"
#: Tags on the training run and on the model version.
TAG_KIND = "llmops.kind"
TAG_BASE_MODEL_ID = "llmops.base_model_id"
TAG_BASE_FINGERPRINT = "llmops.base_model_fingerprint"
TAG_DATASET_DIGEST = "llmops.dataset_digest"
TAG_INDEX_VERSION = "llmops.index_version"
TAG_PROMPT_VERSION = "llmops.prompt_version"
#: On the training run: the version it registered.
TAG_MODEL_VERSION = "llmops.model_version"
#: Written into every adapter folder next to ``adapter_config.json``.
ADAPTER_METADATA_FILE = "llmops_adapter.json"
_ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class ResolvedAdapter:
    """A registered adapter version, downloaded to ``local_dir``."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    local_dir: Path

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name/3`` → (name, "3", None); ``models:/name@champion`` → (name, None, alias)."""
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([\w\-]+))", uri.strip())
    if not match:
        raise GeneratorConfigError(
            f"adapter URI {uri!r} is not models:/<name>/<version> or models:/<name>@<alias>"
        )
    return match.group(1), match.group(2), match.group(3)


def register_version(
    client: Any,
    name: str,
    *,
    source: str,
    run_id: str,
    tags: Mapping[str, str],
    model_description: str,
    version_description: str,
) -> str:
    """Create registered model ``name`` if missing (a concurrent creation is fine), then a new
    version pointing at ``source`` (run artifacts); returns the version number.

    MLflow 3's ``register_model`` wants a logged model, not a plain folder, so the version is
    created from the artifact URI directly (LoRA adapters, fine-tuned embedding models).
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description=model_description)
        except MlflowException as exc:  # created concurrently by another run
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags=dict(tags), description=version_description
    )
    return str(version.version)


def register_adapter_version(
    client: Any, name: str, *, source: str, run_id: str, tags: Mapping[str, str]
) -> str:
    """A new version of the adapters' registered model ``name`` (:func:`register_version`)."""
    return register_version(
        client,
        name,
        source=source,
        run_id=run_id,
        tags=tags,
        model_description="LoRA adapters for the RAG generator (llmops-dagster). "
        "The evaluation gate moves the 'champion' alias.",
        version_description=f"LoRA adapter from run {run_id}",
    )


def resolve_registered_adapter(
    tracking_uri: str,
    cache_dir: Path,
    name: str,
    *,
    version: str | int | None = None,
    alias: str | None = None,
) -> ResolvedAdapter:
    """Find a model version by number or alias and download its adapter folder (once)."""
    from mlflow.exceptions import MlflowException

    from llmops_dagster.tracking.mlflow_store import mlflow_client

    if (version is None) == (alias is None):
        raise GeneratorConfigError("give exactly one of version= or alias= for a LoRA adapter")
    client = mlflow_client(tracking_uri)
    try:
        if alias is not None:
            mv = client.get_model_version_by_alias(name, alias)
        else:
            mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        which = f"@{alias}" if alias is not None else f"/{version}"
        raise GeneratorConfigError(
            f"no registered adapter models:/{name}{which} in MLflow {tracking_uri}: {exc.message}"
        ) from exc
    # Keyed by the artifact source too: another MLflow store can have its own "name v1".
    source_hash = hashlib.sha256(str(mv.source).encode()).hexdigest()[:10]
    target = Path(cache_dir) / "adapters" / f"{safe_name(name)}-v{mv.version}-{source_hash}"

    def download(tmp: Path) -> None:
        import mlflow

        staging = tmp / ".download"
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=str(staging), tracking_uri=tracking_uri
            )
        )
        found = find_adapter_dir(local)
        if found is None:
            raise GeneratorConfigError(
                f"models:/{name}/{mv.version} (source {mv.source}) holds no "
                f"{_ADAPTER_CONFIG}: it is not a PEFT adapter"
            )
        for item in found.iterdir():
            shutil.move(str(item), tmp / item.name)
        shutil.rmtree(staging, ignore_errors=True)

    publish_dir(target, download, complete_marker=_ADAPTER_CONFIG)
    return ResolvedAdapter(
        name=name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        tags=dict(mv.tags or {}),
        local_dir=target,
    )


def find_adapter_dir(root: Path) -> Path | None:
    """``root`` or the first folder below it that holds an ``adapter_config.json``."""
    if (root / _ADAPTER_CONFIG).is_file():
        return root
    for config in sorted(root.rglob(_ADAPTER_CONFIG)):
        return config.parent
    return None


def check_adapter_base(
    adapter_dir: Path, base: LoadedModel, *, tags: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`AdapterMismatchError` if the adapter was trained on another base.

    Checks the registry tag and the adapter's own ``base_model_name_or_path`` against the
    configured base's portable id, and the architecture fingerprint when recorded — so a
    mismatch is a clear message instead of a tensor-shape error deep inside peft.
    """
    expected = base.source.model_id
    config_path = adapter_dir / _ADAPTER_CONFIG
    try:
        adapter_cfg = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise GeneratorConfigError(f"{config_path} is not a readable PEFT adapter config") from exc
    meta: dict[str, Any] = {}
    if (adapter_dir / ADAPTER_METADATA_FILE).is_file():
        meta = json.loads((adapter_dir / ADAPTER_METADATA_FILE).read_text())
    claims = {
        "registry tag " + TAG_BASE_MODEL_ID: (tags or {}).get(TAG_BASE_MODEL_ID),
        "adapter_config base_model_name_or_path": adapter_cfg.get("base_model_name_or_path"),
    }
    for where, claimed in claims.items():
        if claimed and claimed != expected and Path(str(claimed)).name != expected:
            raise AdapterMismatchError(
                f"LoRA adapter {adapter_dir} was trained on base model {claimed!r} ({where}), "
                f"but the configured base is {expected!r} (LLMOPS_GENERATOR_MODEL="
                f"{base.source.display}). Use an adapter trained on this base or point "
                "LLMOPS_GENERATOR_MODEL at the adapter's base."
            )
    fingerprint = (tags or {}).get(TAG_BASE_FINGERPRINT) or meta.get("base_model_fingerprint")
    if fingerprint and fingerprint != base_fingerprint(base.model):
        raise AdapterMismatchError(
            f"LoRA adapter {adapter_dir} was trained on a base with architecture fingerprint "
            f"{fingerprint}, the configured base ({expected}) has "
            f"{base_fingerprint(base.model)}: set LLMOPS_GENERATOR_MODEL to the adapter's base."
        )


def _attach_adapter(base: LoadedModel, adapter_dir: Path) -> LoadedModel:
    """A deep copy of the base with the adapter's LoRA layers (the cached base stays plain)."""
    from peft import PeftModel

    started = time.perf_counter()
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(adapter_dir))
    peft_model.to(base.device)
    peft_model.eval()
    return LoadedModel(
        model=peft_model,
        tokenizer=base.tokenizer,
        source=base.source,
        device=base.device,
        load_seconds=time.perf_counter() - started,
        loaded_from=str(adapter_dir),
        shared=True,
        precision=base.precision,
    )


def load_adapter_generator(
    spec: LocalModelSpec,
    adapter_dir: Path | str,
    *,
    model_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> LocalTransformersGenerator:
    """``spec``'s base + the PEFT adapter in ``adapter_dir`` (checked against the base first),
    loaded once per process. ``kwargs`` go to :class:`LocalTransformersGenerator`."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / _ADAPTER_CONFIG).is_file():
        raise GeneratorConfigError(f"{adapter_dir} holds no {_ADAPTER_CONFIG}")
    base = load_base_model(spec)
    check_adapter_base(adapter_dir, base, tags=tags)
    resolved_id = model_id or f"{base.source.model_id}+lora:{adapter_dir.name}"
    key = (
        "adapter",
        base.source.display,
        base.device,
        base.precision,
        str(adapter_dir.resolve()),
        resolved_id,
    )
    loaded = MODELS.get(key, lambda: _attach_adapter(base, adapter_dir))
    return LocalTransformersGenerator(loaded, model_id=resolved_id, **kwargs)


def load_registered_generator(
    spec: LocalModelSpec, tracking_uri: str, adapter_uri: str, **kwargs: Any
) -> LocalTransformersGenerator:
    """Base + the adapter registered at ``adapter_uri`` (``models:/name/<version>`` or
    ``models:/name@<alias>``) in the registry at ``tracking_uri``.

    ``model_id`` of the result names the resolved version (``...+lora:name/v3``) so answers
    and evaluations record exactly which adapter served, even when asked by alias.
    """
    name, version, alias = parse_model_uri(adapter_uri)
    # Validate the base before touching MLflow: a bad model path fails in milliseconds.
    base_id = resolve_model_source(spec.model, spec.gguf_file).model_id
    adapter = resolve_registered_adapter(
        tracking_uri, spec.cache_dir, name, version=version, alias=alias
    )
    return load_adapter_generator(
        spec,
        adapter.local_dir,
        model_id=f"{base_id}+lora:{name}/v{adapter.version}",
        tags=adapter.tags,
        **kwargs,
    )
