"""``llmops-dagster models prepare``, set-up's step: the packaged GGUF generator de-quantised once
into the models cache, the folder every later load of the generator reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from llmops_dagster.cli import main
from llmops_dagster.config import Settings
from llmops_dagster.models.local import load_base_model, prepare_models
from llmops_dagster.models.source import CONVERTED_MARKER
from llmops_dagster.models.spec import LocalModelSpec

pytestmark = pytest.mark.integration


def test_models_prepare_prints_the_converted_folder_the_generator_then_loads_from() -> None:
    result = CliRunner().invoke(main, ["models", "prepare"])
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip())
    marker = folder / CONVERTED_MARKER
    assert marker.is_file()
    built_at = marker.stat().st_mtime_ns

    settings = Settings()
    spec = LocalModelSpec(
        model=settings.models.generator_model,
        gguf_file=settings.models.generator_gguf_file,
        cache_dir=settings.models_cache_dir,
    )
    assert load_base_model(spec).loaded_from == str(folder)
    # Prepared again: the same folder, not rebuilt.
    assert prepare_models(spec) == folder
    assert marker.stat().st_mtime_ns == built_at


def test_models_prepare_converts_nothing_for_a_model_folder(tmp_path: Path) -> None:
    folder = tmp_path / "some-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    spec = LocalModelSpec(model=str(folder), cache_dir=tmp_path / "cache")
    assert prepare_models(spec) is None
    assert not (tmp_path / "cache").exists()


def test_models_prepare_names_the_setting_when_the_model_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOPS_GENERATOR_MODEL", str(tmp_path / "nowhere"))
    monkeypatch.setenv("LLMOPS_MODELS_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["models", "prepare"])
    assert result.exit_code == 1
    assert f"LLMOPS_GENERATOR_MODEL={tmp_path / 'nowhere'} is neither an existing folder" in (
        result.output
    )
    assert not (tmp_path / "cache").exists()
