"""Generator configuration errors and the OpenAI-compatible client, without a model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from llmops_dagster.config import get_settings
from llmops_dagster.rag.llm import (
    EndpointUnavailable,
    GeneratorConfigError,
    OpenAICompatibleGenerator,
    load_base_model,
    parse_model_uri,
    resolve_model_source,
)

pytestmark = pytest.mark.unit


def test_default_generator_is_the_packaged_gguf() -> None:
    settings = get_settings()
    source = resolve_model_source(settings.generator_model, settings.generator_gguf_file)
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source.model_id == "SmolLM2-135M-Instruct.Q4_1.gguf"  # portable, no local path


@pytest.mark.parametrize("model", ["/no/such/model/dir", "./missing-model", "a/b/c", "bad id!"])
def test_unknown_model_paths_name_the_setting(model: str) -> None:
    with pytest.raises(GeneratorConfigError, match="LLMOPS_GENERATOR_MODEL"):
        resolve_model_source(model, None)


def test_folder_without_model_files_names_both_settings(tmp_path: Path) -> None:
    (tmp_path / "other.gguf").write_bytes(b"")
    with pytest.raises(GeneratorConfigError, match=r"LLMOPS_GENERATOR_GGUF_FILE.*other\.gguf"):
        resolve_model_source(str(tmp_path), "missing.gguf")


def test_folder_with_config_json_is_a_transformers_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    source = resolve_model_source(str(tmp_path), "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert source.gguf_file is None and source.model_id == tmp_path.name


def test_hub_ids_are_accepted_until_loading() -> None:
    assert resolve_model_source("HuggingFaceTB/SmolLM2-135M-Instruct", None).is_local_dir is False


def test_load_with_a_bad_path_fails_before_touching_torch_models() -> None:
    settings = get_settings().model_copy(update={"generator_model": "/nowhere/model"})
    with pytest.raises(GeneratorConfigError, match="LLMOPS_GENERATOR_MODEL=/nowhere/model"):
        load_base_model(settings)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/gen-lora/3", ("gen-lora", "3", None)),
        ("models:/gen-lora@champion", ("gen-lora", None, "champion")),
    ],
)
def test_parse_model_uri(uri: str, expected: tuple[str, str | None, str | None]) -> None:
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize("uri", ["runs:/abc/adapter", "models:/x", "models:/x/latest/2"])
def test_bad_model_uris(uri: str) -> None:
    with pytest.raises(GeneratorConfigError):
        parse_model_uri(uri)


def test_openai_compatible_needs_an_http_url() -> None:
    with pytest.raises(GeneratorConfigError, match="http"):
        OpenAICompatibleGenerator("localhost:8000", "m")


def test_openai_compatible_round_trip_and_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        assert body["messages"][-1]["content"] == "hi"
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"content": " hello "}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2},
            },
        )

    gen = OpenAICompatibleGenerator(
        "http://llm.test/v1",
        "tiny",
        api_key_env="TEST_LLM_KEY",
        transport=httpx.MockTransport(handler),
    )
    [result] = gen.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=8)
    assert (result.text, result.prompt_tokens, result.completion_tokens) == ("hello", 5, 2)
    assert seen[0].url.path == "/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in repr(vars(gen))  # the key is read at call time, never stored


def test_openai_compatible_http_errors_are_explained() -> None:
    gen = OpenAICompatibleGenerator(
        "http://llm.test/v1",
        "tiny",
        transport=httpx.MockTransport(lambda r: httpx.Response(401, text="bad key")),
    )
    with pytest.raises(EndpointUnavailable, match=r"HTTP 401.*OPENAI_API_KEY"):
        gen.generate(["hi"])
