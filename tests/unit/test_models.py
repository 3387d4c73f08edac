"""The models package without a model: source resolution, registry URIs, dispatch, and the
OpenAI-compatible client (the ``openai`` package over a mock transport, or a closed port)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx2  # the HTTP library the openai package is built on
import pytest

from llmops_dagster.config import default_generator_model
from llmops_dagster.models import clear_model_cache, load_generator
from llmops_dagster.models.base import EndpointUnavailable, GeneratorConfigError
from llmops_dagster.models.local import MODELS, load_base_model
from llmops_dagster.models.openai_client import OpenAICompatibleGenerator
from llmops_dagster.models.registry import parse_model_uri
from llmops_dagster.models.source import resolve_model_source
from llmops_dagster.models.spec import GeneratorSpec, LocalModelSpec, OpenAIEndpointSpec
from tests.support.ports import free_port

pytestmark = pytest.mark.unit

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENDPOINT = OpenAIEndpointSpec(base_url="http://llm.test/v1", model="tiny", max_retries=0)


def _mock(handler) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.MockTransport(handler))


def _completion(content: str) -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content},
                 "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        },
    )  # fmt: skip


def test_default_generator_is_the_packaged_gguf() -> None:
    source = resolve_model_source(default_generator_model(), GGUF)
    assert source.gguf_file == GGUF
    assert source.model_id == GGUF  # portable, no local path


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
    source = resolve_model_source(str(tmp_path), GGUF)
    assert source.gguf_file is None and source.model_id == tmp_path.name


def test_hub_ids_are_accepted_until_loading() -> None:
    assert resolve_model_source("HuggingFaceTB/SmolLM2-135M-Instruct", None).is_local_dir is False


def test_load_with_a_bad_path_fails_before_touching_torch_models(tmp_path: Path) -> None:
    spec = LocalModelSpec(model="/nowhere/model", cache_dir=tmp_path)
    before = len(MODELS)  # earlier tests in the session may have loaded the real model
    with pytest.raises(GeneratorConfigError, match="LLMOPS_GENERATOR_MODEL=/nowhere/model"):
        load_base_model(spec)
    assert len(MODELS) == before  # nothing was loaded or cached for the bad path


def test_package_import_is_light() -> None:
    code = (
        "import sys, llmops_dagster.models, llmops_dagster.models.local, "
        "llmops_dagster.models.registry, llmops_dagster.models.openai_client; "
        "heavy = {'torch', 'transformers', 'peft', 'mlflow', 'openai'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(heavy)}' if heavy else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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


def test_load_generator_dispatch_errors(tmp_path: Path) -> None:
    local = LocalModelSpec(model=default_generator_model(), gguf_file=GGUF, cache_dir=tmp_path)
    with pytest.raises(GeneratorConfigError, match="local base model"):
        load_generator(GeneratorSpec(backend="openai", openai=ENDPOINT), adapter_uri="models:/a/1")
    with pytest.raises(GeneratorConfigError, match="endpoint"):
        load_generator(GeneratorSpec(backend="openai"))
    with pytest.raises(GeneratorConfigError, match="local model spec"):
        load_generator(GeneratorSpec(backend="local"))
    with pytest.raises(GeneratorConfigError, match="tracking URI"):
        load_generator(GeneratorSpec(local=local), adapter_uri="models:/a@champion")
    with pytest.raises(GeneratorConfigError, match="models:/<name>"):
        load_generator(GeneratorSpec(local=local), adapter_uri="runs:/x", tracking_uri="sqlite://")
    clear_model_cache()  # no model was loaded: clearing an empty cache is fine


def test_openai_backend_is_dispatched_without_network() -> None:
    generator = load_generator(GeneratorSpec(backend="openai", openai=ENDPOINT))
    assert isinstance(generator, OpenAICompatibleGenerator)
    assert generator.model_id == "openai-compatible:tiny"


def test_openai_compatible_needs_an_http_url() -> None:
    with pytest.raises(GeneratorConfigError, match="http"):
        OpenAICompatibleGenerator(OpenAIEndpointSpec(base_url="localhost:8000", model="m"))


def test_openai_compatible_round_trip_and_key_from_the_spec() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        body = json.loads(request.content)
        assert body["messages"][-1]["content"] == "hi"
        assert (body["model"], body["max_tokens"], body["temperature"]) == ("tiny", 8, 0.0)
        return _completion(" hello ")

    spec = OpenAIEndpointSpec(
        base_url="http://llm.test/v1", model="tiny", api_key="sk-secret", max_retries=0
    )
    gen = OpenAICompatibleGenerator(spec, http_client=_mock(handler))
    [result] = gen.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=8)
    assert (result.text, result.prompt_tokens, result.completion_tokens) == ("hello", 5, 2)
    assert result.finish_reason == "stop"
    assert seen[0].url.path == "/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-secret"
    # The key never shows in a repr (spec, generator, client).
    assert "sk-secret" not in repr(vars(gen)) + repr(vars(gen.client)) + repr(spec)


def test_openai_compatible_batches_keep_order() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return _completion(json.loads(request.content)["messages"][-1]["content"].upper())

    gen = OpenAICompatibleGenerator(ENDPOINT, http_client=_mock(handler))
    assert [g.text for g in gen.generate(["a", "b", "c", "d", "e"])] == list("ABCDE")


@pytest.mark.parametrize("status", [401, 403])
def test_openai_compatible_auth_errors_name_the_api_key(status: int) -> None:
    gen = OpenAICompatibleGenerator(
        ENDPOINT, http_client=_mock(lambda r: httpx2.Response(status, text="bad key"))
    )
    with pytest.raises(EndpointUnavailable, match=rf"HTTP {status}.*bad key.*API key"):
        gen.generate(["hi"])


@pytest.mark.parametrize("body", ["not json", '{"foo": 1}', '{"choices": []}'])
def test_openai_compatible_unexpected_body_is_explained(body: str) -> None:
    gen = OpenAICompatibleGenerator(
        ENDPOINT, http_client=_mock(lambda r: httpx2.Response(200, text=body))
    )
    with pytest.raises(EndpointUnavailable, match=r"http://llm\.test/v1 .*unexpected body"):
        gen.generate(["hi"])


def test_openai_compatible_unreachable_names_the_base_url() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    gen = OpenAICompatibleGenerator(
        OpenAIEndpointSpec(base_url=base_url, model="m", timeout_s=5, max_retries=0)
    )
    with pytest.raises(EndpointUnavailable, match=rf"{base_url} is unreachable"):
        gen.generate(["hi"])
