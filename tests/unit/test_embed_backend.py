"""The embedding backend setting and the atomic, cached ONNX conversion (no model is loaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops_dagster.config import Settings
from llmops_dagster.embed import onnx
from llmops_dagster.embed.model import BACKENDS, backend_model_id, load_embedder

pytestmark = pytest.mark.unit


def test_backend_defaults_to_torch_and_reads_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOPS_EMBEDDING_BACKEND", raising=False)
    assert Settings().models.embedding_backend == "torch"
    monkeypatch.setenv("LLMOPS_EMBEDDING_BACKEND", "onnx-int8")
    assert Settings().models.embedding_backend == "onnx-int8"
    monkeypatch.setenv("LLMOPS_EMBEDDING_BACKEND", "tensorrt")
    with pytest.raises(ValidationError):
        Settings()
    assert set(BACKENDS) == {"torch", "onnx-int8"}


def test_unknown_backend_is_refused_before_anything_loads(tmp_path: Path) -> None:
    # The message names the setting the value came from, and the values it accepts.
    with pytest.raises(ValueError, match="LLMOPS_EMBEDDING_BACKEND") as raised:
        load_embedder("any-model", backend="fp8", cache_dir=tmp_path)
    assert "'fp8'" in str(raised.value) and "torch, onnx-int8" in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # nothing converted, nothing written


def test_fast_backend_has_its_own_model_id() -> None:
    # The vectors differ slightly from fp32 (and between recipes): they must never share cache
    # keys or an index, so the recipe version is part of the id.
    assert onnx.RECIPE_VERSION == 3
    assert backend_model_id("org/model", "torch") == "org/model"
    assert backend_model_id("org/model", "onnx-int8") == "org/model+onnx-int8-r3"


def test_default_threads_are_the_physical_cores_we_may_use() -> None:
    # psutil reads the core topology another way; with one CPU allowed (the affinity mask a
    # container or taskset sets), one intra-op thread.
    code = (
        "import os, psutil; from llmops_dagster.embed.onnx import default_threads; "
        "full = default_threads(); os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "print(full, psutil.cpu_count(logical=False), default_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    full, physical, pinned = map(int, out.stdout.split())
    if len(os.sched_getaffinity(0)) == os.cpu_count():
        assert full == physical
    assert pinned == 1


def _fake_export(calls: list[str]):
    def export(model_ref: str, out_dir: Path, *, canonical_id: str) -> None:
        calls.append(model_ref)
        (out_dir / onnx.MODEL_FILE).write_bytes(b"onnx")
        (out_dir / onnx.META_FILE).write_text(json.dumps({"source_model_id": canonical_id}))

    return export


def test_conversion_is_cached_and_runs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(onnx, "export_int8", _fake_export(calls))
    first = onnx.ensure_onnx_int8("m", tmp_path, canonical_id="m@abc")
    second = onnx.ensure_onnx_int8("m", tmp_path, canonical_id="m@abc")
    assert first == second and onnx.is_converted(first)
    assert calls == ["m"]
    assert first.parent == tmp_path / "onnx"
    assert f"r{onnx.RECIPE_VERSION}" in first.name  # a new recipe converts again
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp folder left


def test_a_failed_conversion_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(model_ref: str, out_dir: Path, *, canonical_id: str) -> None:
        (out_dir / onnx.MODEL_FILE).write_bytes(b"half")
        raise RuntimeError("export crashed")

    monkeypatch.setattr(onnx, "export_int8", broken)
    with pytest.raises(RuntimeError, match="export crashed"):
        onnx.ensure_onnx_int8("m", tmp_path, canonical_id="m@abc")
    assert list((tmp_path / "onnx").iterdir()) == []  # a later run must not trust a half model


def test_losing_a_conversion_race_keeps_the_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = onnx.converted_model_dir("m", tmp_path, canonical_id="m@abc")

    def racing(model_ref: str, out_dir: Path, *, canonical_id: str) -> None:
        _fake_export([])(model_ref, out_dir, canonical_id=canonical_id)
        # Another process finishes first while we were converting.
        target.mkdir(parents=True)
        (target / onnx.MODEL_FILE).write_bytes(b"winner")
        (target / onnx.META_FILE).write_text("{}")

    monkeypatch.setattr(onnx, "export_int8", racing)
    assert onnx.ensure_onnx_int8("m", tmp_path, canonical_id="m@abc") == target
    assert (target / onnx.MODEL_FILE).read_bytes() == b"winner"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_cache_folder_name_is_filesystem_safe(tmp_path: Path) -> None:
    folder = onnx.converted_model_dir("x", tmp_path, canonical_id="org/model name@12")
    assert folder.parent == tmp_path / "onnx"
    assert "/" not in folder.name and " " not in folder.name
