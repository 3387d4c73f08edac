"""Judge plumbing without a model: schema bounds, JSON repair, clamping, the HTTP judge."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from deepeval.metrics.answer_relevancy.schema import Statements
from deepeval.metrics.faithfulness.schema import Verdicts
from deepeval.metrics.g_eval.schema import ReasonScore

from llmops_dagster.evaluate.judge import (
    JudgeConfig,
    JudgeError,
    OpenAICompatibleJudge,
    bounded_json_schema,
    build_judge,
    coerce_to_schema,
    extract_json_object,
    parse_score_range,
)

pytestmark = pytest.mark.unit

GEVAL_PROMPT = '- `"score"`: an integer between 0 and 10, with 10 indicating strong alignment'


def test_bounded_schema_limits_strings_and_arrays_not_enums() -> None:
    schema = bounded_json_schema(Verdicts, max_string_chars=50, max_items=3)
    assert schema["properties"]["verdicts"]["maxItems"] == 3
    verdict = schema["$defs"]["FaithfulnessVerdict"]["properties"]
    assert "maxLength" not in json.dumps(verdict["verdict"])
    assert '"maxLength": 50' in json.dumps(verdict["reason"])


def test_parse_score_range_from_geval_prompt() -> None:
    assert parse_score_range(GEVAL_PROMPT) == (0.0, 10.0)
    assert parse_score_range("no range here") is None


@pytest.mark.parametrize(
    ("text", "expected", "repaired"),
    [
        ('noise {"statements": ["a", "b"]} tail', {"statements": ["a", "b"]}, False),
        ('{"statements": ["a", "b', {"statements": ["a", "b"]}, True),
        ('{"statements": ["a"], "extra', {"statements": ["a"]}, True),
        ('{"reason": "x", "score": 1', {"reason": "x", "score": 1}, True),
        ("no json at all", {}, True),
    ],
)
def test_extract_json_object_repairs_truncation(text: str, expected: dict, repaired: bool) -> None:
    assert extract_json_object(text) == (expected, repaired)


def test_coerce_clamps_scores_and_fills_missing_fields() -> None:
    instance, repaired = coerce_to_schema(
        '{"reason": "ok", "score": 15}', ReasonScore, score_range=(0, 10)
    )
    assert isinstance(instance, ReasonScore) and instance.score == 10 and not repaired
    low, _ = coerce_to_schema('{"reason": "ok", "score": -3}', ReasonScore, score_range=(0, 10))
    assert low.score == 0
    missing, repaired = coerce_to_schema('{"reason": "cut', ReasonScore, score_range=(0, 10))
    assert isinstance(missing, ReasonScore) and missing.score == 0 and repaired
    bad_verdicts, repaired = coerce_to_schema('{"verdicts": "nope"}', Verdicts)
    assert isinstance(bad_verdicts, Verdicts) and bad_verdicts.verdicts == [] and repaired
    statements, _ = coerce_to_schema("garbage", Statements)
    assert isinstance(statements, Statements) and statements.statements == []


def test_judge_config_from_env() -> None:
    assert JudgeConfig.from_env({}) == JudgeConfig()
    config = JudgeConfig.from_env(
        {
            "LLMOPS_JUDGE": "openai",
            "LLMOPS_JUDGE_CAPABLE": "true",
            "LLMOPS_JUDGE_BASE_URL": "http://x/v1",
            "LLMOPS_JUDGE_MODEL": "m",
        }
    )
    assert config.kind == "openai" and config.capable and config.model == "m"
    with pytest.raises(JudgeError, match="LLMOPS_JUDGE="):
        JudgeConfig.from_env({"LLMOPS_JUDGE": "gpt"})
    assert build_judge(JudgeConfig()) is None
    with pytest.raises(JudgeError, match="LLMOPS_JUDGE_BASE_URL"):
        build_judge(JudgeConfig(kind="openai"))
    with pytest.raises(JudgeError, match="generator"):
        build_judge(JudgeConfig(kind="local"))


def _reply(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    assert body["response_format"]["type"] == "json_schema"
    assert request.headers["authorization"] == "Bearer sk-test"
    content = '{"reason": "fine", "score": 42}'  # out of range: must be clamped
    return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})


def test_openai_compatible_judge_sync_and_async(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    judge = OpenAICompatibleJudge(
        base_url="http://judge.local/v1",
        model="big-judge",
        api_key_env="TEST_JUDGE_KEY",
        transport=httpx.MockTransport(_reply),
        async_transport=httpx.MockTransport(_reply),
    )
    assert judge.get_model_name() == "openai-compatible:big-judge"
    result = judge.generate(GEVAL_PROMPT, schema=ReasonScore)
    assert isinstance(result, ReasonScore) and result.score == 10
    result = asyncio.run(judge.a_generate(GEVAL_PROMPT, schema=ReasonScore))
    assert isinstance(result, ReasonScore) and result.score == 10


def test_openai_compatible_judge_errors_are_judge_errors() -> None:
    judge = OpenAICompatibleJudge(
        base_url="http://judge.local/v1",
        model="m",
        transport=httpx.MockTransport(lambda r: httpx.Response(503, text="down")),
    )
    with pytest.raises(JudgeError, match="failed"):
        judge.generate("x", schema=ReasonScore)
    with pytest.raises(JudgeError, match="http"):
        OpenAICompatibleJudge(base_url="judge.local", model="m")
