"""Small, frozen descriptions of which model to load and how: what resources hand the library.

The library never reads the environment or a settings object: a Dagster resource (or the CLI)
builds one of these from its own fields and passes it down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

GeneratorBackend = Literal["local", "openai"]
JudgeKind = Literal["none", "local", "openai"]
#: The weights' floating-point format while generating; ``auto`` resolves per machine
#: (:func:`llmops_dagster.models.source.resolve_precision`).
PRECISIONS = ("float32", "bfloat16")
#: What a local generator that names no precision ran in: every bundle before it was pinned.
LEGACY_PRECISION = "float32"


@dataclass(frozen=True)
class LocalModelSpec:
    """A local causal LM: an HF model folder / hub id, or a folder holding ``gguf_file``."""

    model: str
    gguf_file: str | None = None
    #: Converted GGUF copies and downloaded adapters live here (``<home>/models``).
    cache_dir: Path = Path(".llmops/models")
    #: torch intra-op threads; one core is best left to Elasticsearch on a 2-core machine.
    threads: int = 1
    device: str | None = None
    #: ``float32``, ``bfloat16`` or ``auto`` (bf16 where the device computes it natively);
    #: the resources pass the setting (LLMOPS_GENERATOR_PRECISION), direct callers get float32.
    precision: str = "float32"


@dataclass(frozen=True)
class OpenAIEndpointSpec:
    """An OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server, hosted APIs).

    ``api_key`` is resolved from an ``EnvVar`` by the resource at run time; it is never
    logged, put in metadata or sent to MLflow (``repr`` hides it).
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    max_concurrency: int = 4
    max_retries: int = 2


@dataclass(frozen=True)
class GeneratorSpec:
    """Which generator answers: the local model, or an OpenAI-compatible endpoint."""

    backend: GeneratorBackend = "local"
    local: LocalModelSpec | None = None
    openai: OpenAIEndpointSpec | None = None


@dataclass(frozen=True)
class JudgeSpec:
    """Which judge scores DeepEval's judge metrics, and whether its scores may gate.

    ``local`` reuses the loaded local generator's model (constrained JSON decoding);
    ``openai`` uses ``endpoint``. A 135M local judge is parseable but not meaningful, so
    ``capable`` defaults to False: judge metrics are reported but never gate.
    """

    kind: JudgeKind = "none"
    capable: bool = False
    endpoint: OpenAIEndpointSpec | None = None
    max_new_tokens: int = 192


GeneratorPinBackend = Literal["local", "openai", "builtin"]


@dataclass(frozen=True)
class GeneratorPin:
    """Everything about the generator that an answer depends on, by value: what a RAG bundle
    records so that the bundle that was evaluated is the bundle that answers.

    ``backend``: ``local`` (transformers in this process), ``openai`` (an OpenAI-compatible
    endpoint) or ``builtin`` (the extractive answerer, no model). ``model``: the local base
    model's portable id, the endpoint's model name, or the extractive answerer's id.
    ``weights_digest``: ``sha256:…`` of the local weights; "" where the weights cannot be seen
    (an endpoint) or there are none. Decoding: ``temperature`` (0 = greedy) and
    ``repetition_penalty`` (local only; the OpenAI API has none, so it is 1.0 there).
    ``precision``: the local weights' format while generating (``float32`` / ``bfloat16``:
    greedy answers differ between them); "" for an endpoint or the extractive answerer.
    """

    backend: GeneratorPinBackend
    model: str
    weights_digest: str = ""
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    precision: str = ""

    def __post_init__(self) -> None:
        if self.backend == "local" and not self.precision:
            object.__setattr__(self, "precision", LEGACY_PRECISION)

    def describe(self) -> str:
        digest = f" weights {self.weights_digest[:19]}" if self.weights_digest else ""
        decoding = f"t={self.temperature:g}"
        if self.repetition_penalty != 1.0:
            decoding += f" rp={self.repetition_penalty:g}"
        if self.precision == "bfloat16":
            decoding += " bf16"
        return f"{self.backend}:{self.model}{digest} ({decoding})"
