"""The generator a bundle pins: weights digests, the configured pin, and reproducing a pinned
generator (or refusing to) — without loading a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx2
import pytest

from llmops_dagster.config import Settings
from llmops_dagster.evaluate.triggers import generator_change
from llmops_dagster.models.base import GeneratorConfigError
from llmops_dagster.models.openai_client import require_served_model
from llmops_dagster.models.source import resolve_model_source, weights_digest
from llmops_dagster.models.spec import GeneratorPin, OpenAIEndpointSpec
from llmops_dagster.rag.bundle import RagBundle
from llmops_dagster.resources import build_resources
from tests.support.stubs import rag_bundle

pytestmark = pytest.mark.unit


def _model_folder(root: Path, weights: bytes = b"\x00\x01weights") -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "model.safetensors").write_bytes(weights)
    (root / "tokenizer.json").write_text("{}")
    (root / "README.md").write_text("not part of the model")
    return root


def test_weights_digest_covers_the_model_files_not_their_location(tmp_path: Path) -> None:
    first = _model_folder(tmp_path / "a")
    digest = weights_digest(resolve_model_source(str(first), None))
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    copy = shutil.copytree(first, tmp_path / "elsewhere" / "b")
    assert weights_digest(resolve_model_source(str(copy), None)) == digest
    (copy / "README.md").write_text("edited docs change nothing")
    assert weights_digest(resolve_model_source(str(copy), None)) == digest
    (copy / "model.safetensors").write_bytes(b"\x00\x01weighTs")  # one byte
    assert weights_digest(resolve_model_source(str(copy), None)) != digest
    (copy / "model.safetensors").write_bytes(b"\x00\x01weights")
    (copy / "tokenizer.json").write_text('{"added_tokens": []}')  # the tokenizer changes output
    assert weights_digest(resolve_model_source(str(copy), None)) != digest


def test_the_configured_pin_names_model_weights_and_decoding(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "tiny-llm")
    settings = Settings().override(
        home=tmp_path,
        models={"generator_model": str(folder), "generator_gguf_file": None,
                "generator_temperature": 0.3, "generator_repetition_penalty": 1.25,
                "generator_precision": "bfloat16"},
    )  # fmt: skip
    models = build_resources(settings, with_dlt=False)["models"]
    pin = models.generator_pin()
    assert pin == GeneratorPin(
        "local",
        "tiny-llm",
        weights_digest(resolve_model_source(str(folder), None)),
        0.3,
        1.25,
        "bfloat16",
    )
    endpoint = build_resources(
        settings.override(
            models={"generator_backend": "openai", "generator_base_url": "http://llm.test/v1",
                    "generator_remote_model": "qwen2.5-7b-instruct"}
        ),
        with_dlt=False,
    )["models"]  # fmt: skip
    # The OpenAI API has no repetition penalty: an endpoint pin records 1.0.
    assert endpoint.generator_pin() == GeneratorPin("openai", "qwen2.5-7b-instruct", "", 0.3, 1.0)


def test_a_pinned_generator_that_cannot_be_reproduced_is_refused(tmp_path: Path) -> None:
    configured = _model_folder(tmp_path / "tiny-now")
    settings = Settings().override(
        home=tmp_path, models={"generator_model": str(configured), "generator_gguf_file": None}
    )
    models = build_resources(settings, with_dlt=False)["models"]
    evaluated = GeneratorPin("local", "tiny-now", "sha256:" + "0" * 64, 0.0, 1.1)
    with pytest.raises(GeneratorConfigError) as caught:
        models.pinned_generator(evaluated, recorded_location={"model": str(tmp_path / "gone")})
    message = str(caught.value)
    assert message.startswith("cannot reproduce this bundle's generator tiny-now (weights sha256:")
    assert "configured " in message and "recorded " in message
    assert "evaluate a new candidate bundle" in message

    endpoint = GeneratorPin("openai", "qwen2.5-7b-instruct", "", 0.0, 1.0)
    with pytest.raises(GeneratorConfigError, match="LLMOPS_GENERATOR_BASE_URL"):
        models.pinned_generator(endpoint)


def test_an_endpoint_must_list_the_pinned_model_name() -> None:
    """A stub OpenAI-compatible endpoint (no inference engine runs in the unit suite)."""

    def listing(names: list[str]) -> httpx2.Client:
        body = {"object": "list", "data": [{"id": n, "object": "model"} for n in names]}
        return httpx2.Client(
            transport=httpx2.MockTransport(lambda r: httpx2.Response(200, json=body))
        )

    spec = OpenAIEndpointSpec(base_url="http://llm.test/v1", model="qwen2.5-7b", max_retries=0)
    require_served_model(spec, http_client=listing(["llama-3-8b", "qwen2.5-7b"]))
    with pytest.raises(GeneratorConfigError) as caught:
        require_served_model(spec, http_client=listing(["llama-3-8b"]))
    assert str(caught.value) == (
        "the OpenAI-compatible endpoint http://llm.test/v1 does not serve 'qwen2.5-7b' (it lists "
        "['llama-3-8b']): a bundle evaluated on 'qwen2.5-7b' cannot be answered by another "
        "model; serve it there, or evaluate a new candidate bundle"
    )


def test_a_changed_generator_setting_asks_to_evaluate_a_new_candidate() -> None:
    local = GeneratorPin("local", "SmolLM2", "sha256:" + "a" * 64, 0.0, 1.1)
    champion = rag_bundle(local)
    assert generator_change(champion, local) is None
    for configured in (
        GeneratorPin("local", "SmolLM2", "sha256:" + "b" * 64, 0.0, 1.1),
        GeneratorPin("local", "SmolLM2", "sha256:" + "a" * 64, 0.7, 1.1),
        GeneratorPin("local", "SmolLM2", "sha256:" + "a" * 64, 0.0, 1.0),
        GeneratorPin("openai", "SmolLM2", "", 0.0, 1.0),
        GeneratorPin("local", "SmolLM2", "sha256:" + "a" * 64, 0.0, 1.1, "bfloat16"),
    ):
        reason = generator_change(champion, configured)
        assert reason == (
            f"generator settings differ from the champion's ({local.describe()} → "
            f"{configured.describe()})"
        )
    extractive = RagBundle(
        **{**champion.to_dict(), **RagBundle.generator_fields(GeneratorPin("builtin", "x:v1"))}
    )
    assert generator_change(extractive, GeneratorPin("openai", "m", "", 0.0, 1.0)) is None


def test_a_local_pin_without_a_precision_is_float32_and_auto_resolves_per_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bundle pinned before the precision was is float32; ``auto`` pins what this
    machine computes natively (bf16 only with hardware support), never "auto" itself."""
    from llmops_dagster.models import source

    assert GeneratorPin("local", "SmolLM2", "sha256:" + "a" * 64).precision == "float32"
    assert GeneratorPin("openai", "qwen").precision == ""
    folder = _model_folder(tmp_path / "tiny-llm")
    settings = Settings().override(
        home=tmp_path,
        models={"generator_model": str(folder), "generator_gguf_file": None,
                "generator_precision": "auto"},
    )  # fmt: skip
    models = build_resources(settings, with_dlt=False)["models"]
    monkeypatch.setattr(source, "native_bf16", lambda device: True)
    assert models.generator_pin().precision == "bfloat16"
    monkeypatch.setattr(source, "native_bf16", lambda device: False)
    assert models.generator_pin().precision == "float32"
    with pytest.raises(GeneratorConfigError, match="LLMOPS_GENERATOR_PRECISION"):
        source.resolve_precision("fp16", "cpu")
