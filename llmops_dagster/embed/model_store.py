"""Which folder holds the embedding model of a given id: the configured model, or a fine-tuned
one in the models store (``<models cache>/embedding/<name>/``).

An index records the id of the model that embedded its chunks (``_meta.model_id``); a query
searching it must be embedded by that same model, whatever the settings say today (a promoted
fine-tuned model, or a rollback to the base model). This module turns such an id back into
something :func:`~llmops_dagster.embed.model.load_embedder` can load.
"""

from __future__ import annotations

import threading
from pathlib import Path

from llmops_dagster.embed.model import backend_model_id

#: Sub-folder of the models cache holding fine-tuned embedding models (one folder each).
EMBEDDING_STORE = "embedding"


class UnknownEmbeddingModelError(LookupError):
    """No configured or stored model has this id; the message names the id and the folder."""


_lock = threading.Lock()
#: (folder, backend, folder mtime) → canonical id: the weights are hashed once per process.
_ids: dict[tuple[str, str, int], str] = {}


def _model_id(folder: Path, backend: str) -> str:
    key = (str(folder), backend, folder.stat().st_mtime_ns)
    with _lock:
        found = _ids.get(key)
    if found is None:
        found = backend_model_id(str(folder), backend)
        with _lock:
            _ids[key] = found
    return found


def embedding_store_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / EMBEDDING_STORE


def stored_models(store_dir: Path, backend: str = "torch") -> dict[str, Path]:
    """model id → folder of every sentence-transformers folder under ``store_dir``."""
    if not store_dir.is_dir():
        return {}
    return {
        _model_id(folder, backend): folder
        for folder in sorted(store_dir.iterdir())
        if folder.is_dir() and (folder / "config.json").is_file()
    }


def embedding_model_ref(
    model_id: str, *, configured: str, store_dir: Path, backend: str = "torch"
) -> str:
    """What to load for ``model_id``: ``configured`` when it is that model, else the store folder
    whose canonical id is ``model_id``; :class:`UnknownEmbeddingModelError` otherwise."""
    if _configured_id(configured, backend) == model_id:
        return configured
    folder = stored_models(store_dir, backend).get(model_id)
    if folder is None:
        raise UnknownEmbeddingModelError(
            f"embedding model {model_id!r} is neither the configured model ({configured}, "
            f"LLMOPS_EMBEDDING_MODEL) nor a folder of the models store {store_dir}: the index "
            "that records it cannot be searched or synced here"
        )
    return str(folder)


def _configured_id(configured: str, backend: str) -> str:
    path = Path(configured)
    return _model_id(path, backend) if path.is_dir() else backend_model_id(configured, backend)
