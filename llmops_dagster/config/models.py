"""Settings groups of the models: embedding model, generator, fine-tuning, threads (→
``ModelsResource``) and the DeepEval judge (→ its judge fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from llmops_dagster.config.base import GROUP_CONFIG, env
from llmops_dagster.config.defaults import (
    default_embedding_model,
    default_eval_torch_threads,
    default_generator_model,
    default_torch_threads,
    default_train_torch_threads,
)


class ModelSettings(BaseSettings):
    """Embedding model, generator, fine-tuning and threads (→ ``ModelsResource``)."""

    model_config = GROUP_CONFIG

    embedding_model: str = Field(
        default_factory=default_embedding_model,
        validation_alias=env("LLMOPS_EMBEDDING_MODEL"),
        description="A sentence-transformers model id or path.",
    )
    embedding_backend: Literal["torch", "onnx-int8"] = Field(
        default="torch",
        validation_alias=env("LLMOPS_EMBEDDING_BACKEND"),
        description=(
            "torch: stock sentence-transformers fp32. onnx-int8: the same model converted once "
            "(cached under LLMOPS_HOME/models) to a fused int8 ONNX Runtime graph; its vectors "
            "get their own model id (<id>+onnx-int8-r<recipe>)."
        ),
    )
    embed_batch_size: int = Field(default=64, validation_alias=env("LLMOPS_EMBED_BATCH"))
    generator_backend: Literal["local", "openai"] = Field(
        default="local",
        validation_alias=env("LLMOPS_GENERATOR_BACKEND"),
        description="local: transformers on this machine; openai: an OpenAI-compatible server.",
    )
    generator_model: str = Field(
        default_factory=default_generator_model,
        validation_alias=env("LLMOPS_GENERATOR_MODEL"),
        description="An HF model id or a folder (with generator_gguf_file: a GGUF in it).",
    )
    generator_gguf_file: str | None = Field(
        default="SmolLM2-135M-Instruct.Q4_1.gguf",
        validation_alias=env("LLMOPS_GENERATOR_GGUF_FILE"),
    )
    generator_base_url: str | None = Field(
        default=None,
        validation_alias=env("LLMOPS_GENERATOR_BASE_URL"),
        description="OpenAI-compatible endpoint (…/v1) when generator_backend is openai.",
    )
    generator_remote_model: str | None = Field(
        default=None,
        validation_alias=env("LLMOPS_GENERATOR_REMOTE_MODEL"),
        description="Model name the OpenAI-compatible endpoint serves.",
    )
    generator_temperature: float = Field(
        default=0.0,
        ge=0.0,
        validation_alias=env("LLMOPS_GENERATOR_TEMPERATURE"),
        description="Decoding temperature (0 = greedy). Part of every new bundle's key.",
    )
    generator_repetition_penalty: float = Field(
        default=1.1,
        gt=0.0,
        validation_alias=env("LLMOPS_GENERATOR_REPETITION_PENALTY"),
        description="Local backend only (the OpenAI API has none); a mild penalty keeps a "
        "small model's greedy answers from looping. Part of every new local bundle's key.",
    )
    generator_prefix_cache: bool = Field(
        default=True,
        validation_alias=env("LLMOPS_GENERATOR_PREFIX_CACHE"),
        description="Local backend only: prefill the prompts' shared prefix (system message, "
        "instructions) once and generate from a copy of its KV cache. Speed only: greedy "
        "answers are identical either way, so it is no part of a bundle's key.",
    )
    generator_precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="float32",
        validation_alias=env("LLMOPS_GENERATOR_PRECISION"),
        description="Local backend only: the weights' format while generating. auto = "
        "bfloat16 where the device computes it natively (a CPU with AVX-512 BF16 / AMX, a "
        "bf16 GPU), float32 elsewhere. bfloat16 generates faster on such a CPU, but "
        "its greedy answers depend more on how prompts are batched: the evaluation (batches "
        "of 8, prefix cache) and serving (one request) then disagree on some answers, where "
        "float32 gives the same answer either way. The resolved value is part of every new "
        "local bundle's key, and a bundle is always served in the precision it was evaluated "
        "in. Training always runs in float32.",
    )
    generator_api_key_env: str = Field(
        default="OPENAI_API_KEY",
        validation_alias=env("LLMOPS_GENERATOR_API_KEY_ENV"),
        description="Name of the variable holding the endpoint's key, read where the generator "
        "runs (a dg.EnvVar whenever generator_backend is openai); empty: the endpoint needs "
        "no key (a local server).",
    )
    torch_threads: int = Field(
        default_factory=default_torch_threads, validation_alias=env("LLMOPS_TORCH_THREADS")
    )
    eval_torch_threads: int = Field(
        default_factory=default_eval_torch_threads,
        ge=1,
        validation_alias=env("LLMOPS_EVAL_TORCH_THREADS"),
        description="torch threads of the evaluation's models (rag_evaluation runs alone in the "
        "evaluation pool); default: every core. Serving uses torch_threads.",
    )
    train_torch_threads: int = Field(
        default_factory=default_train_torch_threads,
        ge=1,
        validation_alias=env("LLMOPS_TRAIN_TORCH_THREADS"),
        description="torch threads of lora_adapter's and embedding_finetune's training (they "
        "run in the evaluation pool, one at a time with evaluations); default: every core.",
    )
    cache_dir: Path | None = Field(
        default=None,
        validation_alias=env("LLMOPS_MODELS_CACHE"),
        description="Converted models, ONNX exports, adapters; default LLMOPS_HOME/models. "
        "Share one between checkouts (or test homes) to convert the GGUF model only once.",
    )
    adapter_model_name: str = Field(
        default="llmops-generator-lora",
        validation_alias=env("LLMOPS_LORA_MODEL_NAME"),
        description="Registered model name of the adapters in the MLflow registry.",
    )
    lora_max_steps: int = Field(
        default=8,
        validation_alias=env("LLMOPS_LORA_MAX_STEPS"),
        description="Optimizer steps of the LoRA training; the default is a demo-sized run "
        "(about a minute on CPU). lora_adapter's recipe search trains each candidate for at "
        "most this many steps first (its search_steps).",
    )
    embedding_ft_model_name: str = Field(
        default="llmops-embedding",
        validation_alias=env("LLMOPS_EMBEDDING_FT_MODEL_NAME"),
        description="Registered model name of the fine-tuned embedding models in the MLflow "
        "registry (the embedding_finetune asset).",
    )
    embedding_ft_max_steps: int = Field(
        default=8,
        ge=1,
        validation_alias=env("LLMOPS_EMBEDDING_FT_MAX_STEPS"),
        description="Optimizer steps of the embedding fine-tuning (batches of 16 pairs); the "
        "default is demo-sized: 128 of the sample corpus's 195 pairs, about 80 s on 2 CPU "
        "cores.",
    )


class JudgeSettings(BaseSettings):
    """The DeepEval judge (→ ``ModelsResource``'s judge fields)."""

    model_config = GROUP_CONFIG

    kind: Literal["none", "local", "openai"] = Field(
        default="none", validation_alias=env("LLMOPS_JUDGE")
    )
    capable: bool = Field(
        default=False,
        validation_alias=env("LLMOPS_JUDGE_CAPABLE"),
        description="Only a judge declared capable may gate; a 135M local one is not.",
    )
    base_url: str | None = Field(default=None, validation_alias=env("LLMOPS_JUDGE_BASE_URL"))
    model: str | None = Field(default=None, validation_alias=env("LLMOPS_JUDGE_MODEL"))
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        validation_alias=env("LLMOPS_JUDGE_API_KEY_ENV"),
        description="Name of the variable holding the judge endpoint's key, read where the "
        "evaluation runs (a dg.EnvVar whenever base_url and model are set); empty: no key.",
    )
    max_new_tokens: int = Field(default=192, validation_alias=env("LLMOPS_JUDGE_MAX_NEW_TOKENS"))

    @field_validator("kind", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() or "none" if isinstance(value, str) else value
