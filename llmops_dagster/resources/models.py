"""The models resource: embedding model, generator (local or OpenAI-compatible), judge,
adapters and threads; it builds the specs the library loads models from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from llmops_dagster.config import secret_from_env
from llmops_dagster.config.defaults import (
    default_eval_torch_threads,
    default_train_torch_threads,
)
from llmops_dagster.models.spec import (
    GeneratorPin,
    GeneratorSpec,
    JudgeSpec,
    LocalModelSpec,
    OpenAIEndpointSpec,
)
from llmops_dagster.resources.secrets import secret_field

if TYPE_CHECKING:
    from llmops_dagster.config import Settings
    from llmops_dagster.embed.model import Embedder
    from llmops_dagster.models.base import Generator


class ModelsResource(dg.ConfigurableResource):
    """Embedding model, generator (local or OpenAI-compatible), judge, adapters, threads."""

    embedding_model: str = Field(description="sentence-transformers id or folder.")
    embedding_backend: str = Field(default="torch", description="torch | onnx-int8")
    embed_batch_size: int = 64
    generator_backend: str = Field(default="local", description="local | openai")
    generator_model: str = Field(description="HF id or folder (local backend).")
    generator_gguf_file: str | None = None
    generator_base_url: str | None = Field(default=None, description="…/v1 (openai backend).")
    generator_remote_model: str | None = None
    generator_api_key: str | None = Field(default=None, description="Use dg.EnvVar(...).")
    generator_temperature: float = Field(default=0.0, description="0 = greedy.")
    generator_repetition_penalty: float = Field(
        default=1.1, description="Local backend only (the OpenAI API has none)."
    )
    generator_prefix_cache: bool = Field(
        default=True,
        description="Local backend only: reuse the KV cache of the prompts' shared prefix "
        "(speed only: identical greedy answers, not part of a bundle's key).",
    )
    generator_precision: str = Field(
        default="float32",
        description="Local backend only: auto | float32 | bfloat16 (the resolved value is "
        "pinned in every new local bundle).",
    )
    torch_threads: int = Field(default=1, description="torch intra-op threads.")
    eval_torch_threads: int = Field(
        default_factory=default_eval_torch_threads,
        description="torch intra-op threads while an evaluation runs (alone, in the evaluation "
        "pool): for_evaluation(); default every core.",
    )
    train_torch_threads: int = Field(
        default_factory=default_train_torch_threads,
        description="torch intra-op threads while a training runs (alone, in the evaluation "
        "pool): for_training(); default every core.",
    )
    device: str | None = Field(default=None, description="cpu / cuda; default: cuda if found.")
    cache_dir: str = Field(description="Converted models, ONNX exports, downloaded adapters.")
    adapter_model_name: str = Field(
        default="llmops-generator-lora", description="Registered model name of the adapters."
    )
    lora_max_steps: int = 8
    embedding_ft_model_name: str = Field(
        default="llmops-embedding",
        description="Registered model name of the fine-tuned embedding models.",
    )
    embedding_ft_max_steps: int = 8
    judge: str = Field(default="none", description="none | local | openai")
    judge_capable: bool = Field(default=False, description="May judge metrics gate?")
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key: str | None = Field(default=None, description="Use dg.EnvVar(...).")
    judge_max_new_tokens: int = 192

    @classmethod
    def from_settings(cls, settings: Settings, *, resolve_secrets: bool = False) -> ModelsResource:
        """The models of ``settings.models`` and the judge of ``settings.judge``.

        The endpoint keys are ``dg.EnvVar`` references whenever the configuration talks to an
        endpoint (generator_backend openai; a judge base_url and model), so the run worker
        reads them at run time even if the process that loaded the definitions has none. A
        local setup gets None (Dagster would fail every run on an unset ``EnvVar``); so does an
        endpoint whose key variable is configured as empty (a keyless local server).
        """
        models, judge = settings.models, settings.judge

        def key(env_name: str, needed: bool) -> Any:
            value = secret_from_env(env_name) if resolve_secrets else None
            return secret_field(
                env_name, needed=needed, resolve_secrets=resolve_secrets, value=value
            )

        return cls(
            embedding_model=models.embedding_model,
            embedding_backend=models.embedding_backend,
            embed_batch_size=models.embed_batch_size,
            generator_backend=models.generator_backend,
            generator_model=models.generator_model,
            generator_gguf_file=models.generator_gguf_file,
            generator_base_url=models.generator_base_url,
            generator_remote_model=models.generator_remote_model,
            generator_api_key=key(
                models.generator_api_key_env, needed=models.generator_backend == "openai"
            ),
            generator_temperature=models.generator_temperature,
            generator_repetition_penalty=models.generator_repetition_penalty,
            generator_prefix_cache=models.generator_prefix_cache,
            generator_precision=models.generator_precision,
            torch_threads=models.torch_threads,
            eval_torch_threads=models.eval_torch_threads,
            train_torch_threads=models.train_torch_threads,
            cache_dir=str(settings.models_cache_dir),
            adapter_model_name=models.adapter_model_name,
            lora_max_steps=models.lora_max_steps,
            embedding_ft_model_name=models.embedding_ft_model_name,
            embedding_ft_max_steps=models.embedding_ft_max_steps,
            judge=judge.kind,
            judge_capable=judge.capable,
            judge_base_url=judge.base_url,
            judge_model=judge.model,
            judge_api_key=key(judge.api_key_env, needed=bool(judge.base_url and judge.model)),
            judge_max_new_tokens=judge.max_new_tokens,
        )

    def for_evaluation(self) -> ModelsResource:
        """These models with ``eval_torch_threads`` as their torch threads: what the evaluation
        loads its generators and judge from. Evaluations run one at a time (the evaluation
        pool), so the one running may use every core; serving keeps ``torch_threads``."""
        return ModelsResource(**{**self.model_dump(), "torch_threads": self.eval_torch_threads})

    def for_training(self) -> ModelsResource:
        """These models with ``train_torch_threads`` as their torch threads: what lora_adapter
        trains with (embedding_finetune lends torch the same count for its training). Trainings
        run in the evaluation pool, one at a time with evaluations, so the one running may use
        every core."""
        return ModelsResource(**{**self.model_dump(), "torch_threads": self.train_torch_threads})

    def embedder(self) -> Embedder:
        from llmops_dagster.embed.model import load_embedder

        return load_embedder(
            self.embedding_model,
            device=self.device,
            backend=self.embedding_backend,
            cache_dir=Path(self.cache_dir),
            threads=self.torch_threads,
        )

    def embedder_for(self, model_id: str) -> Embedder:
        """The embedder whose id is ``model_id`` (loaded once per process, like
        :meth:`embedder`): the configured model, or a fine-tuned one of the models store
        (``<cache_dir>/embedding/<name>/``); ``UnknownEmbeddingModelError`` names both."""
        from llmops_dagster.embed.model import load_embedder
        from llmops_dagster.embed.model_store import embedding_model_ref, embedding_store_dir

        ref = embedding_model_ref(
            model_id,
            configured=self.embedding_model,
            store_dir=embedding_store_dir(self.cache_dir),
            backend=self.embedding_backend,
        )
        if ref == self.embedding_model:
            return self.embedder()
        return load_embedder(
            ref,
            device=self.device,
            backend=self.embedding_backend,
            cache_dir=Path(self.cache_dir),
            threads=self.torch_threads,
        )

    def tokenizer(self) -> Any:
        """The embedding model's tokenizer (chunk sizes are counted in its tokens)."""
        from llmops_dagster.embed.model import load_tokenizer

        return load_tokenizer(self.embedding_model)

    def local_model_spec(self) -> LocalModelSpec:
        return LocalModelSpec(
            model=self.generator_model,
            gguf_file=self.generator_gguf_file or None,
            cache_dir=Path(self.cache_dir),
            threads=max(1, self.torch_threads),
            device=self.device,
            precision=self.generator_precision,
        )

    def generator_precision_resolved(self) -> str:
        """``float32`` / ``bfloat16``: what ``generator_precision`` means on this machine."""
        from llmops_dagster.models.source import pick_device, resolve_precision

        return resolve_precision(self.generator_precision, pick_device(self.device))

    def base_model_id(self) -> str:
        """The portable id of the local base model (what adapters and bundles record)."""
        from llmops_dagster.models.source import resolve_model_source

        return resolve_model_source(self.generator_model, self.generator_gguf_file or None).model_id

    def generator_spec(self) -> GeneratorSpec:
        if self.generator_backend == "openai":
            from llmops_dagster.models.base import GeneratorConfigError

            if not self.generator_base_url or not self.generator_remote_model:
                raise GeneratorConfigError(
                    "generator_backend=openai needs generator_base_url and "
                    "generator_remote_model (LLMOPS_GENERATOR_BASE_URL, "
                    "LLMOPS_GENERATOR_REMOTE_MODEL)"
                )
            return GeneratorSpec(
                backend="openai",
                openai=OpenAIEndpointSpec(
                    base_url=self.generator_base_url,
                    model=self.generator_remote_model,
                    api_key=self.generator_api_key or None,
                ),
            )
        if self.generator_backend != "local":
            from llmops_dagster.models.base import GeneratorConfigError

            raise GeneratorConfigError(
                f"generator_backend={self.generator_backend!r}: expected local or openai "
                "(LLMOPS_GENERATOR_BACKEND)"
            )
        return GeneratorSpec(backend="local", local=self.local_model_spec())

    def generator(
        self, *, adapter_uri: str | None = None, tracking_uri: str | None = None
    ) -> Generator:
        """The configured generator; with ``adapter_uri`` (``models:/name/3``, ``@alias``)
        the local base + that registered LoRA adapter."""
        from llmops_dagster.models import load_generator

        spec = self.generator_spec()
        decoding = (
            {
                "repetition_penalty": self.generator_repetition_penalty,
                "prefix_cache": self.generator_prefix_cache,
            }
            if spec.backend == "local"
            else {}
        )
        return load_generator(spec, adapter_uri=adapter_uri, tracking_uri=tracking_uri, **decoding)

    def generator_pin(self) -> GeneratorPin:
        """The generator these settings make, pinned by value (what a new bundle records):
        the local base model's id and weights digest, or the endpoint's model name; and the
        decoding settings."""
        if self.generator_backend == "openai":
            spec = self.generator_spec().openai
            assert spec is not None
            return GeneratorPin("openai", spec.model, "", self.generator_temperature, 1.0)
        self.generator_spec()  # validates the backend name
        from llmops_dagster.models.source import resolve_model_source, weights_digest

        source = resolve_model_source(self.generator_model, self.generator_gguf_file or None)
        return GeneratorPin(
            "local",
            source.model_id,
            weights_digest(source),
            self.generator_temperature,
            self.generator_repetition_penalty,
            self.generator_precision_resolved(),
        )

    def generator_location(self) -> dict[str, str]:
        """Where this resource's generator comes from (recorded with a bundle, so that the
        bundle keeps answering after the settings move on): not part of any key."""
        if self.generator_backend == "openai":
            return {"base_url": self.generator_base_url or ""}
        return {"model": self.generator_model, "gguf_file": self.generator_gguf_file or ""}

    def pinned_generator(
        self,
        pin: GeneratorPin,
        *,
        adapter_uri: str | None = None,
        tracking_uri: str | None = None,
        recorded_location: Mapping[str, str] | None = None,
    ) -> Generator:
        """Exactly the generator ``pin`` describes, or :class:`GeneratorConfigError` saying
        why this process cannot reproduce it (never a different model in its place).

        Local: the configured model when its id and weights digest match, else the location
        recorded when the bundle was evaluated (the settings may have moved on to a new
        candidate), checked the same way. OpenAI-compatible: the configured endpoint (else the
        recorded one) must list the pinned model name; requests name that model.
        """
        from llmops_dagster.models import load_generator
        from llmops_dagster.models.base import GeneratorConfigError

        recorded = dict(recorded_location or {})
        if pin.backend == "openai":
            base_url = self.generator_base_url or recorded.get("base_url") or ""
            if not base_url:
                raise GeneratorConfigError(
                    f"this bundle is answered by {pin.model!r} on an OpenAI-compatible "
                    "endpoint, and no endpoint is configured (LLMOPS_GENERATOR_BASE_URL)"
                )
            from llmops_dagster.models.openai_client import require_served_model

            spec = OpenAIEndpointSpec(
                base_url=base_url, model=pin.model, api_key=self.generator_api_key or None
            )
            require_served_model(spec)
            return load_generator(GeneratorSpec(backend="openai", openai=spec))
        if pin.backend != "local":
            raise GeneratorConfigError(f"generator backend {pin.backend!r} is not a model")
        from llmops_dagster.models.source import resolve_model_source, weights_digest

        tried: list[str] = []
        candidates = [(self.generator_model, self.generator_gguf_file or None, "configured")]
        if recorded.get("model"):
            candidates.append((recorded["model"], recorded.get("gguf_file") or None, "recorded"))
        for model, gguf_file, origin in candidates:
            try:
                source = resolve_model_source(model, gguf_file)
                digest = weights_digest(source)
            except GeneratorConfigError as exc:
                tried.append(f"{origin} {model}: {exc}")
                continue
            if source.model_id == pin.model and digest == pin.weights_digest:
                spec = replace(
                    self.local_model_spec(),
                    model=model,
                    gguf_file=gguf_file,
                    # The precision the bundle was evaluated in, whatever the settings say now.
                    precision=pin.precision,
                )
                return load_generator(
                    GeneratorSpec(backend="local", local=spec),
                    adapter_uri=adapter_uri,
                    tracking_uri=tracking_uri,
                    repetition_penalty=pin.repetition_penalty,
                    # Not pinned: a speed setting that leaves greedy answers unchanged.
                    prefix_cache=self.generator_prefix_cache,
                )
            tried.append(f"{origin} {source.display}: {source.model_id} {digest[:19]}…")
        raise GeneratorConfigError(
            f"cannot reproduce this bundle's generator {pin.model} (weights "
            f"{pin.weights_digest[:19]}…): {'; '.join(tried)}. Point LLMOPS_GENERATOR_MODEL / "
            "LLMOPS_GENERATOR_GGUF_FILE at those weights, or evaluate a new candidate bundle."
        )

    def base_model(self, *, fresh: bool = False) -> Any:
        """The local base model + tokenizer (``fresh``: a private copy for training, always in
        float32 — the recipe measured and tested; the adapter then serves in either precision)."""
        from llmops_dagster.models.local import load_base_model

        spec = self.local_model_spec()
        if fresh:
            spec = replace(spec, precision="float32")
        return load_base_model(spec, fresh=fresh)

    def judge_spec(self) -> JudgeSpec:
        # The endpoint whenever one is configured, whatever the default kind: a run that asks
        # for `judge: openai` must find it.
        endpoint = None
        if self.judge_base_url and self.judge_model:
            endpoint = OpenAIEndpointSpec(
                base_url=self.judge_base_url,
                model=self.judge_model,
                api_key=self.judge_api_key or None,
                timeout_s=120.0,
            )
        return JudgeSpec(
            kind=self.judge,  # type: ignore[arg-type]
            capable=self.judge_capable,
            endpoint=endpoint,
            max_new_tokens=self.judge_max_new_tokens,
        )
