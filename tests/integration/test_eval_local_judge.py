"""The local judge with the REAL packaged SmolLM2 model: for every schema the served DeepEval
metrics ask for, ``generate(prompt, schema=S)`` returns an instance of S — or, when the reply
cannot honestly be one (an empty claim list), raises a counted :class:`JudgeOutputError`.

Kept short (tight string/array bounds, few tokens): a 135M model on a CPU is slow, and what is
tested here is the plumbing — constrained decoding, stopping, parsing, clamping — not judgement.
"""

from __future__ import annotations

import time

import pytest
from deepeval.metrics.answer_relevancy import schema as ar
from deepeval.metrics.faithfulness import schema as fa
from deepeval.metrics.g_eval import schema as ge
from deepeval.test_case import LLMTestCase
from pydantic import BaseModel

from llmops_dagster.config import PROJECT_ROOT, default_generator_model
from llmops_dagster.evaluate.judge import JudgeOutputError, LocalJudge, build_judge
from llmops_dagster.evaluate.metrics import judge_metrics
from llmops_dagster.models.local import LocalTransformersGenerator, load_local_generator
from llmops_dagster.models.spec import JudgeSpec, LocalModelSpec

pytestmark = pytest.mark.integration

ANSWER = "Expense claims must be submitted within 30 days."
CONTEXT = "Submit expense claims in Ledgerly within 30 days of incurring the cost."

#: (metric, schema, prompt): the structured calls AnswerRelevancy, Faithfulness and G-Eval make.
CALLS: list[tuple[str, type[BaseModel], str]] = [
    (
        "answer_relevancy",
        ar.Statements,
        f"List the statements in this text as JSON.\nText: {ANSWER}",
    ),
    (
        "answer_relevancy",
        ar.Verdicts,
        "Is each statement relevant to 'When are claims due?' Answer yes or no as JSON."
        f"\nStatements: ['{ANSWER}']",
    ),
    ("answer_relevancy", ar.AnswerRelevancyScoreReason, "Explain the score 1.0 briefly as JSON."),
    ("faithfulness", fa.Truths, f"List the facts in this context as JSON.\nContext: {CONTEXT}"),
    ("faithfulness", fa.Claims, f"List the claims in this text as JSON.\nText: {ANSWER}"),
    (
        "faithfulness",
        fa.Verdicts,
        "Does the context support each claim? yes or no, as JSON."
        f"\nContext: {CONTEXT}\nClaims: ['{ANSWER}']",
    ),
    ("faithfulness", fa.FaithfulnessScoreReason, "Explain the score 1.0 briefly as JSON."),
    (
        "geval_correctness",
        ge.Steps,
        "List evaluation steps for checking factual correctness as JSON.",
    ),
]


#: The shared project cache: the GGUF → safetensors conversion (~40 s) happens once, not per test.
SPEC = LocalModelSpec(
    model=default_generator_model(),
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    cache_dir=PROJECT_ROOT / ".llmops" / "models",
    threads=1,
)


@pytest.fixture(scope="module")
def generator() -> LocalTransformersGenerator:
    return load_local_generator(SPEC)


@pytest.fixture(scope="module")
def judge(generator: LocalTransformersGenerator) -> LocalJudge:
    return LocalJudge(generator, max_new_tokens=40, max_string_chars=28, max_items=1)


def test_build_judge_reuses_the_generator_and_its_lock(
    generator: LocalTransformersGenerator,
) -> None:
    judge = build_judge(JudgeSpec(kind="local", max_new_tokens=24), generator=generator)
    assert isinstance(judge, LocalJudge) and judge.max_new_tokens == 24
    assert judge.load_model() is generator.model and judge.lock is generator.lock
    assert judge.get_model_name() == "local:SmolLM2-135M-Instruct.Q4_1.gguf"
    text = judge.generate("Say hello.")  # no schema: plain greedy text
    assert isinstance(text, str)


def test_local_judge_answers_every_served_schema_or_raises_a_counted_error(
    judge: LocalJudge,
) -> None:
    """Constrained decoding makes every reply parse; what validation still rejects is an empty
    claim/statement extraction (which DeepEval would score 1.0). Verdicts are forced to hold
    one item (``minItems``), so every schema except those two must come back as an instance."""
    served = {key for key, _, _ in CALLS}
    assert served == {"answer_relevancy", "faithfulness", "geval_correctness"}
    before = judge.stats.snapshot()
    timings, failed = [], []
    for _, schema, prompt in CALLS:
        started = time.perf_counter()
        try:
            result = judge.generate(prompt, schema=schema)
        except JudgeOutputError as exc:
            assert exc.schema_name == schema.__name__
            assert schema.__name__ in {"Claims", "Statements"}, exc
            assert "empty" in exc.problem, exc
            failed.append(schema.__name__)
        else:
            assert isinstance(result, schema), (schema.__name__, result)
        timings.append(time.perf_counter() - started)
    after = judge.stats.snapshot()
    assert after["calls"] - before["calls"] == len(CALLS)
    assert after["failed"] - before["failed"] == len(failed)
    print("judge call seconds:", [round(t, 1) for t in timings], "failed:", failed, after)


def test_geval_through_deepeval_gets_a_clamped_score(judge: LocalJudge) -> None:
    """G-Eval's final call (ReasonScore) via the real metric: the score lands in [0, 1]."""
    returned: list[object] = []
    original = judge.generate

    def spy(prompt: object, schema: type[BaseModel] | None = None, **kwargs: object) -> object:
        out = original(prompt, schema)
        returned.append(out)
        return out

    judge.generate = spy  # type: ignore[method-assign]
    try:
        geval = judge_metrics(judge)[2]
        geval.async_mode = False
        case = LLMTestCase(
            input="When are expense claims due?",
            actual_output=ANSWER,
            expected_output="Within 30 days of the cost.",
        )
        score = geval.measure(case, _show_indicator=False)
    finally:
        del judge.generate
    assert [type(r).__name__ for r in returned] == ["ReasonScore"]
    assert isinstance(returned[0], ge.ReasonScore) and 0 <= returned[0].score <= 10
    assert 0.0 <= score <= 1.0
