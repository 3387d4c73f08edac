"""What a RAG bundle pins: the :class:`RagBundle` value, its validation and its tag form.

Why: answers depend on the generator (backend, model and its weights, adapter, decoding), the
prompt text, the retrieval settings, the embedding model and the physical index; promoting only
the adapter lets a prompt edit, a re-index or a changed endpoint ship unevaluated. A
:class:`RagBundle` pins all of them by concrete reference or by value, and its :meth:`key` covers
every field. The registry side (versions, aliases, promotion) is :mod:`llmops_dagster.rag.bundle`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from llmops_dagster.models.spec import LEGACY_PRECISION, PRECISIONS, GeneratorPin

#: Version tags ``bundle.<field>`` hold the bundle (:meth:`RagBundle.as_tags`).
TAG_PREFIX = "bundle."
_ADAPTER_URI_RE = re.compile(r"models:/[^/@\s]+/\d+")
_PROMPT_URI_RE = re.compile(r"prompts:/[^/@\s]+/\d+")
_INT_FIELDS = ("retrieval_k", "metrics_depth", "max_new_tokens")
_FLOAT_FIELDS = ("temperature", "repetition_penalty")
_BACKENDS = {"llm": ("local", "openai"), "extractive": ("builtin",)}
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class BundleError(ValueError):
    """An invalid bundle, or a bundle reference that does not resolve."""


@dataclass(frozen=True, kw_only=True)
class RagBundle:
    """Everything an answer depends on, by concrete (immutable) reference or by value.

    The generator is pinned whole: ``generator_backend`` (``local`` transformers, an ``openai``
    compatible endpoint, or the ``builtin`` extractive answerer), ``base_model_id`` (the local
    base model's portable id, the endpoint's model name, or the extractive answerer's id),
    ``weights_digest`` (local only), the adapter version, and the decoding settings.
    """

    generator: Literal["llm", "extractive"]
    generator_backend: Literal["local", "openai", "builtin"]
    adapter_uri: str | None  # models:/name/<version>; None = the base model (always, extractive)
    base_model_id: str
    weights_digest: str  # sha256:… of the local base weights; "" for an endpoint or extractive
    temperature: float
    repetition_penalty: float
    prompt_uri: str  # prompts:/name/<version>
    prompt_version: str  # the template's content hash
    retrieval_mode: str
    retrieval_k: int
    metrics_depth: int = 10
    max_new_tokens: int
    embedding_model_id: str
    index_name: str  # the physical index the alias pointed at when evaluated
    index_alias: str
    # float32 / bfloat16 for a local generator ("" → float32: bundles registered before the
    # precision was pinned were all evaluated in float32); "" for an endpoint or extractive.
    precision: str = ""

    def __post_init__(self) -> None:
        def require(ok: object, problem: str) -> None:
            if not ok:
                raise BundleError(f"invalid bundle: {problem}")

        if self.generator_backend == "local" and self.precision == "":
            object.__setattr__(self, "precision", LEGACY_PRECISION)
        require(self.generator in _BACKENDS, f"generator {self.generator!r}")
        require(
            self.generator_backend in _BACKENDS.get(self.generator, ()),
            f"generator {self.generator!r} cannot run on backend {self.generator_backend!r}",
        )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _INT_FIELDS:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
                require(ok, f"{f.name} must be a positive integer, not {value!r}")
            elif f.name in _FLOAT_FIELDS:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                require(ok and value >= 0, f"{f.name} must be a number >= 0, not {value!r}")
            elif f.name not in ("adapter_uri", "weights_digest", "precision"):
                require(
                    isinstance(value, str) and bool(value),
                    f"{f.name} must be a non-empty string, not {value!r}",
                )
        require(self.repetition_penalty > 0, "repetition_penalty must be > 0")
        if self.generator_backend == "local":
            require(
                isinstance(self.weights_digest, str) and _DIGEST_RE.fullmatch(self.weights_digest),
                f"a local generator needs weights_digest sha256:<64 hex>, "
                f"not {self.weights_digest!r}",
            )
        else:
            require(
                self.weights_digest == "",
                f"weights_digest is for local weights only (backend {self.generator_backend})",
            )
        if self.generator_backend == "local":
            require(
                self.precision in PRECISIONS,
                f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}",
            )
        else:
            require(
                self.precision == "",
                f"precision is for local weights only (backend {self.generator_backend})",
            )
        if self.generator_backend == "openai":
            require(
                self.repetition_penalty == 1.0,
                "the OpenAI API has no repetition penalty: an openai bundle records 1.0",
            )
        if self.adapter_uri is not None:
            require(
                self.generator_backend == "local",
                "a LoRA adapter is loaded on the local base model (backend local)",
            )
            ok = isinstance(self.adapter_uri, str) and _ADAPTER_URI_RE.fullmatch(self.adapter_uri)
            require(ok, f"adapter_uri {self.adapter_uri!r} is not models:/<name>/<version>")
        require(
            _PROMPT_URI_RE.fullmatch(self.prompt_uri),
            f"prompt_uri {self.prompt_uri!r} is not a concrete prompts:/<name>/<version>",
        )

    @property
    def generator_pin(self) -> GeneratorPin:
        return GeneratorPin(
            backend=self.generator_backend,
            model=self.base_model_id,
            weights_digest=self.weights_digest,
            temperature=float(self.temperature),
            repetition_penalty=float(self.repetition_penalty),
            precision=self.precision,
        )

    @staticmethod
    def generator_fields(pin: GeneratorPin) -> dict[str, Any]:
        """The bundle fields a :class:`GeneratorPin` fills (``RagBundle(**fields, ...)``)."""
        return {
            "generator": "extractive" if pin.backend == "builtin" else "llm",
            "generator_backend": pin.backend,
            "base_model_id": pin.model,
            "weights_digest": pin.weights_digest,
            "temperature": float(pin.temperature),
            "repetition_penalty": float(pin.repetition_penalty),
            "precision": pin.precision,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field; ``precision`` only when it is not the legacy float32 (or "" off the
        local backend), so the keys and tags of bundles registered before it was pinned stay
        what they were."""
        data = asdict(self)
        if data["precision"] in ("", LEGACY_PRECISION):
            del data["precision"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RagBundle:
        """Strict: every field, nothing else."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data) - {"precision"})  # absent = the legacy default
        if "generator_backend" in missing:
            raise BundleError(
                "this bundle was registered before bundles pinned their whole generator "
                "(backend, weights digest, decoding): it cannot be reproduced; evaluate a new "
                "candidate bundle"
            )
        if unknown or missing:
            raise BundleError(f"bundle keys: unknown {unknown}, missing {missing}")
        return cls(**dict(data))

    def as_tags(self) -> dict[str, str]:
        """``bundle.<field>`` → string (adapter_uri None → "")."""
        return {f"{TAG_PREFIX}{k}": "" if v is None else str(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> RagBundle:
        """The bundle from :meth:`as_tags` output (other tags are ignored)."""
        data: dict[str, Any] = {}
        for key, value in tags.items():
            if (name := key.removeprefix(TAG_PREFIX)) != key:  # a bundle.* tag
                data[name] = _parse_tag(name, value)
        if data.get("adapter_uri") == "":
            data["adapter_uri"] = None
        return cls.from_dict(data)

    def key(self) -> str:
        """Stable digest of the content: identical bundles share it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def describe(self) -> str:
        generator = f"llm {self.generator_pin.describe()} + {self.adapter_uri or 'no adapter'}"
        if self.generator == "extractive":
            generator = self.base_model_id
        return (
            f"{generator} (≤{self.max_new_tokens} tokens) | prompt {self.prompt_uri} "
            f"({self.prompt_version}) | {self.retrieval_mode} k={self.retrieval_k} "
            f"on {self.index_name} (@{self.index_alias}, {self.embedding_model_id}) | "
            f"key {self.key()}"
        )


def _parse_tag(name: str, value: str) -> Any:
    """A ``bundle.*`` tag value back to its field's type (invalid text stays text, so the
    validation names the field)."""
    if name in _INT_FIELDS and value.isdigit():
        return int(value)
    if name in _FLOAT_FIELDS:
        try:
            return float(value)
        except ValueError:
            return value
    return value
