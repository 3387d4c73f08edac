"""Judge plumbing without a model: schema bounds, JSON repair, clamping, the HTTP judge."""

from __future__ import annotations

import asyncio
import json

import httpx2  # the HTTP library the openai package is built on
import pytest
from deepeval.metrics.answer_relevancy.schema import Statements
from deepeval.metrics.faithfulness.schema import Claims, Truths, Verdicts
from deepeval.metrics.g_eval.schema import ReasonScore

from llmops_dagster.evaluate.judge import (
    JudgeError,
    JudgeOutputError,
    OpenAICompatibleJudge,
    bounded_json_schema,
    build_judge,
    coerce_to_schema,
    extract_json_object,
    judge_stats,
    parse_score_range,
)
from llmops_dagster.evaluate.judge_schema import json_object_complete
from llmops_dagster.models.openai_client import OpenAICompatibleGenerator
from llmops_dagster.models.spec import JudgeSpec, OpenAIEndpointSpec

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


def test_coerce_clamps_scores_into_the_prompts_range() -> None:
    instance, repaired = coerce_to_schema(
        '{"reason": "ok", "score": 15}', ReasonScore, score_range=(0, 10)
    )
    assert isinstance(instance, ReasonScore) and instance.score == 10 and not repaired
    low, _ = coerce_to_schema('{"reason": "ok", "score": -3}', ReasonScore, score_range=(0, 10))
    assert low.score == 0
    # A number sent as a string is only a number after validation: clamped all the same.
    text, _ = coerce_to_schema('{"reason": "ok", "score": "15"}', ReasonScore, score_range=(0, 10))
    assert text.score == 10


def test_coerce_counts_a_repaired_truncation_with_complete_fields() -> None:
    instance, repaired = coerce_to_schema('{"statements": ["a", "b"], "extra', Statements)
    assert instance.statements == ["a", "b"] and repaired


@pytest.mark.parametrize(
    ("text", "schema", "problem"),
    [
        ("garbage", Statements, "no JSON object"),
        ('{"reason": "cut', ReasonScore, r"repaired JSON does not fit: score: Field required"),
        ('{"verdicts": "nope"}', Verdicts, r"JSON does not fit: verdicts: Input should be"),
        ('{"verdicts": [{"verdict": "maybe"}]}', Verdicts, r"verdicts\.0\.verdict: Input should"),
        ('{"verdicts": []}', Verdicts, "empty 'verdicts' list"),
        ('{"statements": []}', Statements, "empty 'statements' list"),
        ('{"claims": []}', Claims, "empty 'claims' list"),
        ('{"verdicts": [{"verdict": "yes"}]}', ReasonScore, "reason: Field required"),
    ],
)
def test_output_that_does_not_fit_is_an_error_never_a_placeholder(
    text: str, schema: type, problem: str
) -> None:
    """The old placeholders scored as passes: [] verdicts → 1.0, an unknown verdict →
    "borderline" (passing). Now each raises, naming the schema and what was wrong."""
    with pytest.raises(JudgeOutputError, match=problem) as info:
        coerce_to_schema(text, schema, score_range=(0, 10))
    assert str(info.value).startswith(f"judge output for {schema.__name__}: ")
    assert isinstance(info.value, JudgeError)


def test_truths_may_be_empty() -> None:
    # An empty retrieval context has no truths; truths are not what gets scored.
    instance, _ = coerce_to_schema('{"truths": []}', Truths)
    assert instance.truths == []


def test_decoder_schema_forces_a_verdict_but_not_a_claim() -> None:
    assert bounded_json_schema(Verdicts)["properties"]["verdicts"]["minItems"] == 1
    assert "minItems" not in bounded_json_schema(Claims)["properties"]["claims"]
    assert "minItems" not in bounded_json_schema(Statements)["properties"]["statements"]


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ('{"a": [1, {"b": "}"}]}', True),
        ('  {"a": "x"} trailing', True),
        ('{"a": [1, {"b": "}"}]', False),
        ('{"a": "x\\"', False),
        ("no object", False),
    ],
)
def test_json_object_complete_is_the_stopping_rule(text: str, complete: bool) -> None:
    assert json_object_complete(text) is complete


def test_build_judge_from_spec() -> None:
    assert JudgeSpec() == JudgeSpec(kind="none", capable=False, endpoint=None)
    assert build_judge(JudgeSpec()) is None
    with pytest.raises(JudgeError, match="base URL"):
        build_judge(JudgeSpec(kind="openai"))
    with pytest.raises(JudgeError, match="generator"):
        build_judge(JudgeSpec(kind="local"))
    remote = OpenAICompatibleGenerator(OpenAIEndpointSpec(base_url="http://x/v1", model="m"))
    with pytest.raises(JudgeError, match=r"local generator.*OpenAICompatibleGenerator"):
        build_judge(JudgeSpec(kind="local"), generator=remote)  # type: ignore[arg-type]
    with pytest.raises(JudgeError, match="expected none, local or openai"):
        build_judge(JudgeSpec(kind="gpt"))  # type: ignore[arg-type]
    endpoint = OpenAIEndpointSpec(base_url="http://x/v1", model="m", api_key="sk-hidden")
    judge = build_judge(JudgeSpec(kind="openai", capable=True, endpoint=endpoint))
    assert isinstance(judge, OpenAICompatibleJudge) and judge.get_model_name() == (
        "openai-compatible:m"
    )
    assert "sk-hidden" not in repr(vars(judge)) + repr(vars(judge.client))


def _reply(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "ReasonScore"
    assert request.headers["authorization"] == "Bearer sk-test"
    content = '{"reason": "fine", "score": 42}'  # out of range: must be clamped
    return httpx2.Response(
        200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    )


def test_openai_compatible_judge_sync_and_async() -> None:
    spec = OpenAIEndpointSpec(
        base_url="http://judge.local/v1", model="big-judge", api_key="sk-test", max_retries=0
    )
    judge = OpenAICompatibleJudge(
        spec,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_reply)),
        async_http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(_reply)),
    )
    assert judge.get_model_name() == "openai-compatible:big-judge"
    result = judge.generate(GEVAL_PROMPT, schema=ReasonScore)
    assert isinstance(result, ReasonScore) and result.score == 10
    result = asyncio.run(judge.a_generate(GEVAL_PROMPT, schema=ReasonScore))
    assert isinstance(result, ReasonScore) and result.score == 10
    assert judge.stats.snapshot() == {"calls": 2, "repaired": 0, "failed": 0}


def test_openai_compatible_judge_counts_repaired_and_unfit_replies() -> None:
    replies = iter(['{"statements": ["a"], "cut', '{"statements": []}', "no json"])

    def handler(request: httpx2.Request) -> httpx2.Response:
        message = {"role": "assistant", "content": next(replies)}
        return httpx2.Response(200, json={"choices": [{"index": 0, "message": message}]})

    spec = OpenAIEndpointSpec(base_url="http://judge.local/v1", model="m", max_retries=0)
    judge = OpenAICompatibleJudge(
        spec, async_http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    )
    assert asyncio.run(judge.a_generate("x", schema=Statements)).statements == ["a"]
    with pytest.raises(JudgeOutputError, match="empty 'statements' list"):
        asyncio.run(judge.a_generate("x", schema=Statements))
    with pytest.raises(JudgeOutputError, match="no JSON object"):
        asyncio.run(judge.a_generate("x", schema=Statements))
    assert judge.stats.snapshot() == {"calls": 3, "repaired": 1, "failed": 2}
    assert judge_stats(judge) == {"calls": 3, "repaired": 1, "failed": 2}
    assert judge_stats(object()) is None  # a judge that keeps no count


def test_openai_compatible_judge_json_object_mode_and_plain_text() -> None:
    bodies: list[dict] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        message = {"role": "assistant", "content": '{"statements": ["a"]}'}
        return httpx2.Response(200, json={"choices": [{"index": 0, "message": message}]})

    spec = OpenAIEndpointSpec(base_url="http://judge.local/v1", model="m", max_retries=0)
    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    judge = OpenAICompatibleJudge(spec, json_mode="json_object", http_client=client)
    assert judge.generate("x", schema=Statements).statements == ["a"]
    assert judge.generate("x") == '{"statements": ["a"]}'
    assert bodies[0]["response_format"] == {"type": "json_object"}
    assert "response_format" not in bodies[1]


def test_openai_compatible_judge_errors_are_judge_errors() -> None:
    spec = OpenAIEndpointSpec(base_url="http://judge.local/v1", model="m", max_retries=0)
    judge = OpenAICompatibleJudge(
        spec,
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(lambda r: httpx2.Response(503, text="down"))
        ),
    )
    with pytest.raises(JudgeError, match=r"failed.*HTTP 503.*down"):
        judge.generate("x", schema=ReasonScore)
    assert (judge.calls, judge.failed_calls) == (1, 1)
    with pytest.raises(JudgeError, match="http"):
        OpenAICompatibleJudge(OpenAIEndpointSpec(base_url="judge.local", model="m"))
