"""Online evaluation (evaluate/online.py): the day's sample, citation validity, low scores and
the per-version warnings — no judge, no services."""

from __future__ import annotations

import pytest

from llmops_dagster.evaluate.online import (
    CITATION_VALIDITY,
    Judgment,
    ServedAnswer,
    judge_answers,
    low_scores,
    online_warnings,
    sample_day,
    served_answer,
    version_means,
)

pytestmark = pytest.mark.unit

DAY = "2026-12-06"


def _row(n: int, version: str | None, *, day: str = DAY, audience: list[str] | None = None):
    return {
        "trace_id": f"tr-{version}-{n:03d}",
        "created_at": f"{day}T10:{n % 60:02d}:00.000000+00:00",
        "bundle_version": version,
        "question": f"question {n}",
        "answer": f"answer {n} [chunk:c{n}]",
        "cited_chunk_ids": [f"c{n}"],
        "retrieved": [{"chunk_id": f"c{n}", "doc_id": "d", "title": "t", "score": 1.0}],
        "asker_groups": [],
        "audience": audience or ["public"],
    }


def test_the_sample_is_stratified_per_version_and_the_same_on_every_run() -> None:
    rows = [_row(n, "3") for n in range(40)] + [_row(n, None) for n in range(5)]
    rows += [_row(n, "3", day="2026-12-05") for n in range(7)]  # another day: never sampled
    first = sample_day(rows, DAY, per_version=10)
    again = sample_day(list(reversed(rows)), DAY, per_version=10)
    assert [a.trace_id for a in first.chosen] == [a.trace_id for a in again.chosen]
    assert first.per_version == {"3": 10, "base": 5}  # the small version is not drowned
    assert (first.answered, len(first.chosen), first.share_judged) == (45, 15, 15 / 45)
    assert {a.day for a in first.chosen} == {DAY}
    other = sample_day(rows, "2026-12-05", per_version=10)
    assert other.per_version == {"3": 7}


def test_restricted_answers_are_counted_and_never_sampled() -> None:
    rows = [_row(n, "3") for n in range(3)] + [_row(9, "3", audience=["finance"])]
    sample = sample_day(rows, DAY, per_version=10)
    assert sample.skipped_restricted == 1 and sample.answered == 4
    assert "tr-3-009" not in {a.trace_id for a in sample.chosen}


def test_a_per_version_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="per_version must be at least 1, got 0"):
        sample_day([], DAY, per_version=0)


def _answer(trace_id: str, cited: tuple[str, ...], given: tuple[str, ...], **kw) -> ServedAnswer:
    return ServedAnswer(trace_id, DAY, kw.pop("version", "3"), "q?", "a.", cited, given, **kw)


def test_citation_validity_scores_the_share_of_citations_among_the_given_chunks() -> None:
    answers = [
        _answer("all", ("c1", "c2"), ("c1", "c2", "c3")),
        _answer("half", ("c1", "c9"), ("c1", "c2")),
        _answer("none-cited", (), ("c1",)),
        _answer("refused", (), (), refused=True),
    ]
    judgments, result = judge_answers(answers)
    scores = {j.trace_id: j.score for j in judgments}
    assert scores == {"all": 1.0, "half": 0.5, "none-cited": 0.0}  # the refusal is not scored
    reasons = {j.trace_id: j.reason for j in judgments}
    assert reasons["half"] == "1/2 citations among the chunks given (not given: ['c9'])"
    assert reasons["none-cited"] == "cites no chunk"
    assert {j.metric for j in judgments} == {CITATION_VALIDITY}
    assert {j.judge for j in judgments} == {"code"}
    assert result is not None and result.judge is None


def test_only_refusals_judge_nothing() -> None:
    assert judge_answers([_answer("r", (), (), refused=True)]) == ([], None)


def _j(trace_id: str, version: str, score: float | None, error: str | None = None) -> Judgment:
    return Judgment(trace_id, DAY, version, CITATION_VALIDITY, score, "why", error, "code")


def test_low_scores_name_every_metric_below_the_threshold_and_every_error() -> None:
    judgments = [_j("a", "3", 0.2), _j("b", "3", 0.9), _j("c", "3", None, "JudgeOutputError: x")]
    assert low_scores(judgments, 0.5) == {
        "a": ["citation_validity 0.20 < 0.5: why"],
        "c": ["citation_validity errored (JudgeOutputError: x)"],
    }


def test_a_version_below_its_reference_warns_and_errors_count_as_zero() -> None:
    judgments = [_j("a", "3", 1.0), _j("b", "3", None, "boom"), _j("c", "base", 1.0)]
    means = version_means(judgments)
    assert means == {"3": {CITATION_VALIDITY: 0.5}, "base": {CITATION_VALIDITY: 1.0}}
    warnings = online_warnings(means, offline={}, floors={CITATION_VALIDITY: 0.8}, margin=0.1)
    assert [(w.bundle_version, w.metric) for w in warnings] == [("3", CITATION_VALIDITY)]
    assert warnings[0].describe() == (
        "bundle 3: online citation_validity 0.500 is more than 0.1 below 0.800 "
        "(the configured floor)"
    )


def test_the_champions_offline_score_is_the_reference_where_it_exists() -> None:
    means = {"3": {"faithfulness": 0.55, "answer_relevancy": 0.9}}
    warnings = online_warnings(
        means, offline={"faithfulness": 0.8}, floors={"faithfulness": 0.1}, margin=0.1
    )
    assert [(w.metric, w.reference, w.reference_source) for w in warnings] == [
        ("faithfulness", 0.8, "the champion's offline evaluation")
    ]  # answer_relevancy: no reference at all, not checked


def test_inferred_citations_count_as_none_so_a_model_ignoring_its_context_scores_zero() -> None:
    """The answer path infers citations from word overlap when the model cites nothing; they
    are among the given chunks by construction, so they must not make a blind answer valid."""
    answers = [
        _answer("inferred", ("c1",), ("c1", "c2"), citations_inferred=True),
        _answer("model-made", ("c1",), ("c1", "c2")),
    ]
    judgments, _ = judge_answers(answers)
    assert {j.trace_id: j.score for j in judgments} == {"inferred": 0.0, "model-made": 1.0}
    reasons = {j.trace_id: j.reason for j in judgments}
    assert reasons["inferred"] == "cites no chunk itself (citations inferred from word overlap)"


def test_a_served_row_carries_whether_its_citations_were_inferred() -> None:
    row = {"trace_id": "t", "question": "q?", "answer": "a.", "cited_chunk_ids": ["c1"],
           "retrieved": [{"chunk_id": "c1"}], "bundle_version": "3"}  # fmt: skip
    assert served_answer(row, DAY).citations_inferred is False  # rows from before the column
    assert served_answer({**row, "citations_inferred": True}, DAY).citations_inferred is True
