"""RagBundle validation, serialisation (dict, tags), key and prompt URIs: no MLflow store."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from llmops_dagster.models.spec import GeneratorPin
from llmops_dagster.rag.bundle import BundleError, RagBundle
from llmops_dagster.rag.prompt_registry import PromptRegistryError, parse_prompt_uri, prompt_uri

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
DATA: dict[str, Any] = {
    "generator": "llm",
    "generator_backend": "local",
    "adapter_uri": "models:/llmops-generator-lora/3",
    "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "weights_digest": DIGEST,
    "temperature": 0.0,
    "repetition_penalty": 1.1,
    "prompt_uri": "prompts:/rag_answer/2",
    "prompt_version": "0123456789ab",
    "retrieval_mode": "hybrid",
    "retrieval_k": 3,
    "metrics_depth": 10,
    "max_new_tokens": 128,
    "embedding_model_id": "sentence-transformers/all-MiniLM-L6-v2",
    "index_name": "llmops-chunks-v7",
    "index_alias": "llmops-chunks",
}


def test_dict_and_tags_round_trip() -> None:
    bundle = RagBundle.from_dict(DATA)
    assert bundle.to_dict() == DATA
    assert RagBundle.from_dict(json.loads(json.dumps(bundle.to_dict()))) == bundle
    tags = bundle.as_tags()
    assert set(tags) == {f"bundle.{k}" for k in DATA} and all(
        isinstance(v, str) for v in tags.values()
    )
    assert tags["bundle.retrieval_k"] == "3"
    assert tags["bundle.repetition_penalty"] == "1.1"
    assert RagBundle.from_tags(tags | {"llmops.kind": "rag_bundle", "decision": "x"}) == bundle

    base_only = replace(bundle, adapter_uri=None)
    assert base_only.as_tags()["bundle.adapter_uri"] == ""
    assert RagBundle.from_tags(base_only.as_tags()) == base_only
    extractive = replace(
        base_only,
        **RagBundle.generator_fields(GeneratorPin("builtin", "extractive:v1")),
    )
    assert RagBundle.from_tags(extractive.as_tags()) == extractive
    endpoint = replace(
        base_only, **RagBundle.generator_fields(GeneratorPin("openai", "qwen2.5-7b", "", 0.2))
    )
    assert RagBundle.from_tags(endpoint.as_tags()) == endpoint
    assert endpoint.generator_pin == GeneratorPin("openai", "qwen2.5-7b", "", 0.2, 1.0)


def test_key_is_stable_and_content_addressed() -> None:
    a, b = RagBundle.from_dict(DATA), RagBundle.from_dict(dict(reversed(list(DATA.items()))))
    assert a.key() == b.key() and len(a.key()) == 16
    assert replace(a, index_name="llmops-chunks-v8").key() != a.key()
    assert replace(a, metrics_depth=20).key() != a.key()


@pytest.mark.parametrize(
    "changes",
    [
        {"weights_digest": "sha256:" + "cd" * 32},
        {"temperature": 0.7},
        {"repetition_penalty": 1.0},
        {"base_model_id": "HuggingFaceTB/SmolLM2-360M-Instruct"},
        {"generator_backend": "openai", "weights_digest": "", "repetition_penalty": 1.0,
         "adapter_uri": None, "precision": ""},
        {"precision": "bfloat16"},
    ],
)  # fmt: skip
def test_every_generator_setting_is_part_of_the_key(changes: dict[str, Any]) -> None:
    """A different model, weights file, endpoint or decoding setting is a different bundle,
    so it is evaluated before it can answer as the champion."""
    base = RagBundle.from_dict(DATA)
    assert replace(base, **changes).key() != base.key()


def test_describe_is_one_line() -> None:
    text = RagBundle.from_dict(DATA).describe()
    assert "\n" not in text
    for part in ("models:/llmops-generator-lora/3", "prompts:/rag_answer/2", "llmops-chunks-v7"):
        assert part in text
    assert "local:HuggingFaceTB/SmolLM2-135M-Instruct weights sha256:abababab" in text
    assert "(t=0 rp=1.1)" in text
    extractive = RagBundle.from_dict(
        DATA
        | RagBundle.generator_fields(GeneratorPin("builtin", "extractive:v1"))
        | {"adapter_uri": None}
    )
    assert extractive.describe().startswith("extractive:v1 (≤128 tokens)")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"generator": "extractive"}, "cannot run on backend 'local'"),
        ({"generator": "gpt"}, "generator"),
        ({"generator_backend": "openai"}, "weights_digest is for local weights only"),
        (
            {"generator_backend": "openai", "weights_digest": "", "repetition_penalty": 1.0},
            "a LoRA adapter is loaded on the local base model",
        ),
        (
            {"generator_backend": "openai", "weights_digest": "", "adapter_uri": None},
            "the OpenAI API has no repetition penalty",
        ),
        ({"weights_digest": ""}, "a local generator needs weights_digest"),
        ({"weights_digest": "abc"}, "a local generator needs weights_digest"),
        ({"temperature": -0.1}, "temperature must be a number >= 0"),
        ({"temperature": "0"}, "temperature must be a number >= 0"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
        ({"adapter_uri": "models:/llmops-generator-lora@champion"}, "adapter_uri"),
        ({"adapter_uri": "runs:/abc/adapter"}, "adapter_uri"),
        ({"prompt_uri": "prompts:/rag_answer@production"}, "prompt_uri"),
        ({"prompt_uri": "rag_answer@0123456789ab"}, "prompt_uri"),
        ({"retrieval_k": 0}, "retrieval_k"),
        ({"retrieval_k": "3"}, "retrieval_k"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"index_name": ""}, "index_name"),
        ({"base_model_id": ""}, "base_model_id"),
        ({"prompt_version": None}, "prompt_version"),
    ],
)
def test_invalid_bundles_raise(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(BundleError, match=message):
        RagBundle.from_dict(DATA | changes)


def test_from_dict_is_strict() -> None:
    missing = {k: v for k, v in DATA.items() if k != "index_alias"}
    with pytest.raises(BundleError, match=r"missing \['index_alias'\]"):
        RagBundle.from_dict(missing)
    without_depth = {k: v for k, v in DATA.items() if k != "metrics_depth"}
    with pytest.raises(BundleError, match="metrics_depth"):
        RagBundle.from_dict(without_depth)
    with pytest.raises(BundleError, match=r"unknown \['top_p'\]"):
        RagBundle.from_dict(DATA | {"top_p": 0.9})
    legacy = {k: v for k, v in DATA.items() if k not in ("generator_backend", "weights_digest")}
    with pytest.raises(BundleError, match="registered before bundles pinned their whole"):
        RagBundle.from_dict(legacy)
    with pytest.raises(BundleError, match="retrieval_k"):
        RagBundle.from_tags(RagBundle.from_dict(DATA).as_tags() | {"bundle.retrieval_k": "-1"})


def test_precision_is_pinned_and_legacy_bundles_keep_their_key() -> None:
    """A bundle registered before the precision was pinned (no field) is float32 with the key
    and tags it always had; a bfloat16 bundle is another bundle, and its tags carry it."""
    legacy = RagBundle.from_dict(DATA)
    explicit = RagBundle.from_dict(DATA | {"precision": "float32"})
    assert legacy.precision == explicit.precision == "float32"
    assert explicit.key() == legacy.key() and explicit.as_tags() == legacy.as_tags()
    assert "bundle.precision" not in legacy.as_tags()

    bf16 = RagBundle.from_dict(DATA | {"precision": "bfloat16"})
    assert bf16.key() != legacy.key()
    assert bf16.as_tags()["bundle.precision"] == "bfloat16"
    assert RagBundle.from_tags(bf16.as_tags()) == bf16
    assert bf16.generator_pin.precision == "bfloat16"
    assert "(t=0 rp=1.1 bf16)" in bf16.describe()
    with pytest.raises(BundleError, match="precision 'float16': expected one of float32"):
        RagBundle.from_dict(DATA | {"precision": "float16"})
    endpoint = {"generator_backend": "openai", "weights_digest": "", "repetition_penalty": 1.0,
                "adapter_uri": None}  # fmt: skip
    with pytest.raises(BundleError, match="precision is for local weights only"):
        RagBundle.from_dict(DATA | endpoint | {"precision": "bfloat16"})


def test_prompt_uris() -> None:
    assert parse_prompt_uri("prompts:/rag_answer/3") == ("rag_answer", 3, None)
    assert parse_prompt_uri("prompts:/rag_answer@champion") == ("rag_answer", None, "champion")
    assert prompt_uri("rag_answer", "4") == "prompts:/rag_answer/4"
    for bad in ("prompts:rag_answer/1", "prompts:/rag_answer", "models:/x/1", "prompts:/a/b/1"):
        with pytest.raises(PromptRegistryError):
            parse_prompt_uri(bad)
