"""Property and example tests of the fusion maths (no Elasticsearch)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmops_dagster.search.fusion import linear_fuse, normalize_scores, rank_of, rrf_fuse

# Property tests draw inputs on a 2-core machine shared with other suites: a slow draw is the
# machine, not the strategy, so the input-generation timing checks are off.
_SHARED_MACHINE = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)

pytestmark = pytest.mark.unit

ids = st.text(alphabet="abcdefghij", min_size=1, max_size=3)
ranking = st.lists(ids, unique=True, max_size=30)
rankings = st.lists(ranking, min_size=1, max_size=4)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
score_map = st.dictionaries(ids, finite, max_size=30)
nonneg_score_map = st.dictionaries(
    ids, st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=30
)


def test_rrf_known_values() -> None:
    fused = dict(rrf_fuse([["a", "b"], ["b", "c"]], rank_constant=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)
    assert [d for d, _ in rrf_fuse([["a", "b"], ["b", "c"]])] == ["b", "a", "c"]


def test_rrf_ties_break_by_best_rank_then_id() -> None:
    # x and y both score 1/61 + 1/62; tie broken by best rank (both 1), then by id.
    assert [d for d, _ in rrf_fuse([["x", "y"], ["y", "x"]])] == ["x", "y"]
    # a: rank 1 in one list; b: rank 2 in both lists would differ, so build an exact tie:
    assert [d for d, _ in rrf_fuse([["b"], ["a"]])] == ["a", "b"]


@pytest.mark.parametrize("bad", [{"rank_constant": -1}, {"window": 0}])
def test_rrf_rejects_bad_parameters(bad: dict) -> None:
    with pytest.raises(ValueError):
        rrf_fuse([["a"]], **bad)


@_SHARED_MACHINE
@given(rankings, ids, st.integers(min_value=0, max_value=100))
def test_rrf_id_first_everywhere_wins(lists: list[list[str]], winner: str, k: int) -> None:
    lists = [[winner, *[d for d in ranking if d != winner]] for ranking in lists]
    fused = rrf_fuse(lists, rank_constant=k)
    assert fused[0][0] == winner


@_SHARED_MACHINE
@given(rankings, st.integers(min_value=0, max_value=100), st.integers(min_value=1, max_value=50))
def test_rrf_scores_sorted_positive_and_window_respected(
    lists: list[list[str]], k: int, window: int
) -> None:
    fused = rrf_fuse(lists, rank_constant=k, window=window)
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)
    assert all(s > 0 for s in scores)
    allowed = {d for ranking in lists for d in ranking[:window]}
    assert {d for d, _ in fused} == allowed
    # No id can beat being first in every list.
    assert all(s <= len(lists) / (k + 1) + 1e-12 for s in scores)


@_SHARED_MACHINE
@given(rankings, st.randoms(use_true_random=False))
def test_rrf_invariant_to_list_order(lists: list[list[str]], rnd) -> None:
    shuffled = list(lists)
    rnd.shuffle(shuffled)
    left, right = rrf_fuse(lists), rrf_fuse(shuffled)
    assert [d for d, _ in left] == [d for d, _ in right]
    for (_, a), (_, b) in zip(left, right, strict=True):
        assert a == pytest.approx(b)


@_SHARED_MACHINE
@given(ranking, st.integers(min_value=0, max_value=30))
def test_rrf_monotone_in_rank(single: list[str], k: int) -> None:
    """A better rank never yields a lower score: one list fused alone keeps its order."""
    assert [d for d, _ in rrf_fuse([single], rank_constant=k)] == single


@_SHARED_MACHINE
@given(ranking, ranking)
def test_rrf_adding_a_list_where_id_is_present_never_lowers_it(a: list[str], b: list[str]) -> None:
    base = dict(rrf_fuse([a]))
    more = dict(rrf_fuse([a, b]))
    for doc_id, score in base.items():
        assert more[doc_id] >= score


@_SHARED_MACHINE
@given(score_map)
def test_minmax_in_unit_interval(scores: dict[str, float]) -> None:
    normalized = normalize_scores(scores, "minmax")
    assert set(normalized) == set(scores)
    assert all(0.0 <= v <= 1.0 for v in normalized.values())
    if len(set(scores.values())) > 1:
        assert max(normalized.values()) == 1.0
        assert min(normalized.values()) == 0.0


@_SHARED_MACHINE
@given(nonneg_score_map)
def test_l2_in_unit_interval_for_nonnegative_scores(scores: dict[str, float]) -> None:
    normalized = normalize_scores(scores, "l2")
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in normalized.values())
    if any(v > 0 for v in scores.values()):
        assert math.hypot(*normalized.values()) == pytest.approx(1.0)


def _ranking_of(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda d: (-scores[d], d))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(score_map, score_map, st.sampled_from(["minmax", "l2", "none"]))
def test_linear_one_zero_weights_reproduce_single_ranking(
    first: dict[str, float], second: dict[str, float], norm: str
) -> None:
    fused = linear_fuse([first, second], weights=[1.0, 0.0], normalization=norm)  # type: ignore[arg-type]
    assert [d for d, _ in fused] == _ranking_of(first)
    fused = linear_fuse([first, second], weights=[0.0, 1.0], normalization=norm)  # type: ignore[arg-type]
    assert [d for d, _ in fused] == _ranking_of(second)


@_SHARED_MACHINE
@given(st.lists(score_map, min_size=1, max_size=3))
def test_linear_minmax_fused_scores_bounded_by_weight_sum(lists: list[dict[str, float]]) -> None:
    weights = [1.0 / len(lists)] * len(lists)
    fused = linear_fuse(lists, weights=weights, normalization="minmax")
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)
    assert all(-1e-12 <= s <= 1.0 + 1e-9 for s in scores)
    assert {d for d, _ in fused} == {d for scores_ in lists for d in scores_}


def test_linear_known_values() -> None:
    fused = linear_fuse([{"a": 10.0, "b": 5.0, "c": 0.0}, {"c": 0.9, "a": 0.5}], [0.5, 0.5])
    as_dict = dict(fused)
    assert as_dict["a"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert as_dict["c"] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert as_dict["b"] == pytest.approx(0.25)
    # a and c tie at 0.5: a reached position 0 of the first list, c position 0 of the second;
    # the id decides.
    assert [d for d, _ in fused] == ["a", "c", "b"]


def test_linear_rejects_mismatched_or_negative_weights() -> None:
    with pytest.raises(ValueError):
        linear_fuse([{"a": 1.0}], weights=[0.5, 0.5])
    with pytest.raises(ValueError):
        linear_fuse([{"a": 1.0}], weights=[-1.0])
    with pytest.raises(ValueError):
        normalize_scores({"a": 1.0}, "zscore")  # type: ignore[arg-type]


def test_rank_of_first_occurrence() -> None:
    assert rank_of(["a", "b", "a"]) == {"a": 1, "b": 2}
