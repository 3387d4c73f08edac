"""A pinned generator is reproduced exactly, or refused: the real packaged SmolLM2 model, loaded
the way evaluation and serving load a bundle's generator."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from llmops_dagster.config import Settings
from llmops_dagster.models.base import GeneratorConfigError
from llmops_dagster.resources import build_resources

pytestmark = pytest.mark.integration


def test_a_pinned_champion_keeps_answering_after_the_generator_settings_move_on(
    tmp_path: Path,
) -> None:
    """Evaluated with the packaged model and a repetition penalty of 1.3; the settings then move
    to an endpoint backend, another local model and other decoding. The bundle's generator is
    still exactly the evaluated one (from the location recorded at evaluation), never the
    configured one; with that location gone too, it is refused."""
    evaluated = build_resources(
        Settings().override(home=tmp_path, models={"cache_dir": Settings().models_cache_dir}),
        with_dlt=False,
    )["models"]
    pin = replace(evaluated.generator_pin(), repetition_penalty=1.3)
    recorded = evaluated.generator_location()

    other = tmp_path / "another-model"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (other / "model.safetensors").write_bytes(b"other weights")
    moved_on = build_resources(
        Settings().override(
            home=tmp_path,
            models={
                "cache_dir": Settings().models_cache_dir,
                "generator_backend": "openai",
                "generator_base_url": "http://127.0.0.1:9/v1",
                "generator_remote_model": "somebody-elses-model",
                "generator_model": str(other),
                "generator_gguf_file": None,
                "generator_temperature": 0.8,
                "generator_repetition_penalty": 1.0,
            },
        ),
        with_dlt=False,
    )["models"]
    assert moved_on.generator_pin() != pin

    generator = moved_on.pinned_generator(pin, recorded_location=recorded)
    assert generator.model_id == pin.model == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert generator.repetition_penalty == 1.3  # the bundle's decoding, not the settings'
    [out] = generator.generate(["Reply with one word: hello."], max_new_tokens=4)
    assert out.completion_tokens >= 1

    with pytest.raises(GeneratorConfigError, match="cannot reproduce this bundle's generator"):
        moved_on.pinned_generator(pin, recorded_location={"model": str(tmp_path / "deleted")})


def test_a_bundle_is_served_in_the_precision_it_was_evaluated_in(tmp_path: Path) -> None:
    """Evaluated in bfloat16, served by settings that now say float32: the bfloat16 weights
    answer (and the reverse); both are held side by side in one process, each answering as it
    did when evaluated. A training copy is float32 whatever the settings say."""
    import torch

    def models_with(precision: str) -> object:
        settings = Settings().override(
            home=tmp_path,
            models={"cache_dir": Settings().models_cache_dir, "generator_precision": precision},
        )
        return build_resources(settings, with_dlt=False)["models"]

    bf16_settings, fp32_settings = models_with("bfloat16"), models_with("float32")
    bf16_pin, fp32_pin = bf16_settings.generator_pin(), fp32_settings.generator_pin()
    assert (bf16_pin.precision, fp32_pin.precision) == ("bfloat16", "float32")
    assert replace(bf16_pin, precision="float32") == fp32_pin  # nothing else differs

    served_bf16 = fp32_settings.pinned_generator(bf16_pin)
    served_fp32 = bf16_settings.pinned_generator(fp32_pin)
    assert next(served_bf16.model.parameters()).dtype == torch.bfloat16
    assert next(served_fp32.model.parameters()).dtype == torch.float32
    prompt = ["Answer in one short sentence: what colour is the sky on a clear day?"]
    first = served_bf16.generate(prompt, max_new_tokens=12)[0].text
    served_fp32.generate(prompt, max_new_tokens=12)  # the other precision in between
    assert served_bf16.generate(prompt, max_new_tokens=12)[0].text == first

    training = bf16_settings.base_model(fresh=True)
    assert next(training.model.parameters()).dtype == torch.float32
