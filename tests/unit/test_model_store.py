"""Which folder holds an embedding model id: the configured model, a fine-tuned one of the models
store, or a clear error (``embed/model_store.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops_dagster.embed.model import canonical_model_id
from llmops_dagster.embed.model_store import (
    UnknownEmbeddingModelError,
    embedding_model_ref,
    embedding_store_dir,
)

pytestmark = pytest.mark.unit


def _model(folder: Path, weights: bytes) -> Path:
    """A folder that looks like a sentence-transformers model (ids hash the weights only)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_the_configured_model_resolves_to_its_own_reference(tmp_path: Path) -> None:
    base = _model(tmp_path / "all-MiniLM-L6-v2", b"base weights")
    store = embedding_store_dir(tmp_path / "cache")
    _model(store / "tuned", b"tuned weights")
    model_id = canonical_model_id(str(base))
    assert embedding_model_ref(model_id, configured=str(base), store_dir=store) == str(base)


def test_a_fine_tuned_model_resolves_to_its_store_folder(tmp_path: Path) -> None:
    base = _model(tmp_path / "all-MiniLM-L6-v2", b"base weights")
    store = embedding_store_dir(tmp_path / "cache")
    tuned = _model(store / "tuned", b"tuned weights")
    _model(store / "other", b"other weights")
    model_id = canonical_model_id(str(tuned))
    assert model_id.startswith("tuned@") and model_id != canonical_model_id(str(base))
    assert embedding_model_ref(model_id, configured=str(base), store_dir=store) == str(tuned)


def test_an_unknown_model_id_is_an_error_naming_it_and_the_store(tmp_path: Path) -> None:
    base = _model(tmp_path / "all-MiniLM-L6-v2", b"base weights")
    store = embedding_store_dir(tmp_path / "cache")
    _model(store / "tuned", b"tuned weights")
    with pytest.raises(UnknownEmbeddingModelError) as raised:
        embedding_model_ref("gone@0123456789ab", configured=str(base), store_dir=store)
    message = str(raised.value)
    assert "'gone@0123456789ab'" in message and str(store) in message
    assert "LLMOPS_EMBEDDING_MODEL" in message


def test_a_missing_store_folder_is_no_model_rather_than_a_crash(tmp_path: Path) -> None:
    base = _model(tmp_path / "base", b"base weights")
    with pytest.raises(UnknownEmbeddingModelError):
        embedding_model_ref("x@1", configured=str(base), store_dir=tmp_path / "absent")
