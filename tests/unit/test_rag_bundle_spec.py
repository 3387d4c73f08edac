"""RagBundle validation, serialisation (dict, tags), key and prompt URIs: no MLflow store."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from llmops_dagster.rag.bundle import BundleError, RagBundle
from llmops_dagster.rag.prompt_registry import PromptRegistryError, parse_prompt_uri, prompt_uri

pytestmark = pytest.mark.unit

DATA: dict[str, Any] = {
    "generator": "llm",
    "adapter_uri": "models:/llmops-generator-lora/3",
    "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
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
    assert RagBundle.from_tags(tags | {"llmops.kind": "rag_bundle", "decision": "x"}) == bundle

    base_only = replace(bundle, adapter_uri=None)
    assert base_only.as_tags()["bundle.adapter_uri"] == ""
    assert RagBundle.from_tags(base_only.as_tags()) == base_only
    extractive = replace(base_only, generator="extractive", base_model_id="")
    assert RagBundle.from_tags(extractive.as_tags()) == extractive


def test_key_is_stable_and_content_addressed() -> None:
    a, b = RagBundle.from_dict(DATA), RagBundle.from_dict(dict(reversed(list(DATA.items()))))
    assert a.key() == b.key() and len(a.key()) == 16
    assert replace(a, index_name="llmops-chunks-v8").key() != a.key()
    assert replace(a, metrics_depth=20).key() != a.key()


def test_describe_is_one_line() -> None:
    text = RagBundle.from_dict(DATA).describe()
    assert "\n" not in text
    for part in ("models:/llmops-generator-lora/3", "prompts:/rag_answer/2", "llmops-chunks-v7"):
        assert part in text
    extractive = RagBundle.from_dict(DATA | {"generator": "extractive", "adapter_uri": None})
    assert extractive.describe().startswith("extractive")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"generator": "extractive"}, "extractive bundle has no adapter_uri"),
        ({"generator": "gpt"}, "generator"),
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
    with pytest.raises(BundleError, match=r"unknown \['temperature'\]"):
        RagBundle.from_dict(DATA | {"temperature": 0.2})
    with pytest.raises(BundleError, match="retrieval_k"):
        RagBundle.from_tags(RagBundle.from_dict(DATA).as_tags() | {"bundle.retrieval_k": "-1"})


def test_prompt_uris() -> None:
    assert parse_prompt_uri("prompts:/rag_answer/3") == ("rag_answer", 3, None)
    assert parse_prompt_uri("prompts:/rag_answer@champion") == ("rag_answer", None, "champion")
    assert prompt_uri("rag_answer", "4") == "prompts:/rag_answer/4"
    for bad in ("prompts:rag_answer/1", "prompts:/rag_answer", "models:/x/1", "prompts:/a/b/1"):
        with pytest.raises(PromptRegistryError):
            parse_prompt_uri(bad)
