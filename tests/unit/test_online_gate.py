"""Online non-inferiority before promotion: the policy's online fields, the verdict on the arm
comparison (exact n of N, margins both ways, waiting, refused) and the registry path of a
version awaiting online evidence (real MLflow registry on SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from llmops_dagster.evaluate.gate import current_alias_version
from llmops_dagster.evaluate.online_gate import (
    DEFAULT_ONLINE_MARGINS,
    TAG_ONLINE_VERDICT,
    OnlineRequirement,
    online_verdict,
    settle_online,
)
from llmops_dagster.evaluate.policy import PromotionPolicy
from llmops_dagster.rag.bundle import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_BUNDLE_MODEL,
    TAG_OUTCOME,
    BundleVersion,
    promote_decided,
    register_bundle,
    set_bundle_alias,
)
from llmops_dagster.serving.arm_comparison import ArmComparison, compare_arms
from llmops_dagster.serving.daily_report import ServedTrace
from llmops_dagster.tracking.mlflow_store import ensure_mlflow
from llmops_dagster.tracking.runs import open_run
from tests.support.stubs import rag_bundle
from tests.support.tracking import sqlite_store
from tests.unit.test_eval_policy import comp, held_guards
from tests.unit.test_eval_policy import run as decide_run

pytestmark = pytest.mark.unit

REQUIRE_5 = OnlineRequirement(5, {"cited": 0.05, "thumbs_down": 0.10})


def row(
    metric: str, n: tuple[int, int], diff: float | None, low: float | None, high: float | None
) -> ArmComparison:
    higher = metric not in ("latency_ms", "tokens", "thumbs_down")
    return ArmComparison(metric, n[0], n[1], None, None, diff, low, high, higher)


def rows(
    n: tuple[int, int] = (5, 7),
    cited: tuple[float, float, float] = (0.0, -0.02, 0.02),
    down: tuple[float, float, float] | None = (0.0, -0.05, 0.05),
) -> list[ArmComparison]:
    rated = (3, 4) if down is not None else (0, 0)
    return [
        row("latency_ms", n, 900.0, 500.0, 1300.0),  # far slower: not a margin by default
        row("tokens", n, 50.0, 40.0, 60.0),
        row("cited", n, *cited),
        row("thumbs_down", rated, *(down or (None, None, None))),
    ]


# --- the verdict ------------------------------------------------------------------------------
def test_fewer_answers_than_required_on_either_arm_is_waiting_with_exact_counts() -> None:
    verdict = online_verdict(rows(n=(4, 9)), REQUIRE_5)
    assert (verdict.status, verdict.n_answers, verdict.n_required) == ("waiting", 4, 5)
    assert (verdict.challenger_answers, verdict.champion_answers) == (4, 9)
    assert verdict.reason == (
        "waiting for online evidence: challenger 4, champion 9 answers on the days both "
        "answered; 5 per arm needed"
    )
    # The champion's side counts as much: 9 challenger answers against 4 champion ones wait too.
    assert online_verdict(rows(n=(9, 4)), REQUIRE_5).status == "waiting"


def test_every_margin_met_on_n_answers_is_ok() -> None:
    verdict = online_verdict(rows(), REQUIRE_5)
    assert (verdict.status, verdict.n_answers, verdict.n_required) == ("ok", 5, 5)
    assert verdict.reason == (
        "online non-inferior on 5 challenger / 7 champion answers (≥ 5): "
        "cited diff +0.0000 [-0.0200, +0.0200] n=5/7: low end -0.0200 ≥ -0.05; "
        "thumbs_down diff +0.0000 [-0.0500, +0.0500] n=3/4: high end +0.0500 ≤ +0.1"
    )


def test_a_citation_share_whose_interval_reaches_below_the_margin_is_refused() -> None:
    verdict = online_verdict(rows(cited=(-0.04, -0.09, 0.01)), REQUIRE_5)
    assert verdict.status == "refused"
    assert "cited diff -0.0400 [-0.0900, +0.0100] n=5/7: low end -0.0900 < -0.05" in verdict.reason


def test_lower_is_better_reads_the_high_end_mirrored() -> None:
    # A thumbs-down share that may have risen by 0.2 fails; its low end is irrelevant.
    refused = online_verdict(rows(down=(0.1, 0.05, 0.2)), REQUIRE_5)
    assert refused.status == "refused"
    assert "thumbs_down diff +0.1000 [+0.0500, +0.2000] n=3/4: high end +0.2000 > +0.1" in (
        refused.reason
    )
    # Far fewer thumbs-down (a large negative difference) is better, not a regression.
    assert online_verdict(rows(down=(-0.5, -0.9, -0.1)), REQUIRE_5).status == "ok"


def test_a_margin_metric_without_values_on_both_arms_is_noted_not_blocking() -> None:
    verdict = online_verdict(rows(down=None), REQUIRE_5)
    assert verdict.status == "ok"
    assert verdict.reason.endswith(
        "thumbs_down not compared (challenger n=0, champion n=0): not checked"
    )


def test_latency_gates_only_when_the_policy_names_it() -> None:
    assert online_verdict(rows(), OnlineRequirement(5, {"latency_ms": 1000.0})).status == "refused"


def test_a_verdict_on_compare_arms_output_counts_every_served_answer() -> None:
    traces = [
        ServedTrace(f"c{n}", "2026-12-06", "4", 100.0, 10, 5, cited_count=1) for n in range(5)
    ]
    traces += [
        ServedTrace(f"b{n}", "2026-12-06", "3", 100.0, 10, 5, cited_count=1) for n in range(6)
    ]
    feedback = [(f"c{n}", "down") for n in range(5)] + [(f"b{n}", "up") for n in range(6)]
    arm_rows, _ = compare_arms(traces, feedback, challenger="4", champion="3", n_resamples=200)
    verdict = online_verdict(arm_rows, REQUIRE_5)
    assert (verdict.status, verdict.challenger_answers, verdict.champion_answers) == (
        "refused",
        5,
        6,
    )
    assert "thumbs_down diff +1.0000 [+1.0000, +1.0000] n=5/6: high end +1.0000 > +0.1" in (
        verdict.reason
    )


# --- the policy -------------------------------------------------------------------------------
def test_online_evidence_is_off_by_default_and_the_champion_decision_unchanged() -> None:
    policy = PromotionPolicy()
    assert (policy.min_online_answers, dict(policy.online_margins)) == (0, DEFAULT_ONLINE_MARGINS)
    decision = decide_run(policy, baseline_version="3")
    assert (decision.outcome, decision.online) == ("champion", None)


def test_a_champion_decision_with_min_online_answers_awaits_online_evidence() -> None:
    policy = PromotionPolicy.from_mapping(
        {"min_online_answers": 50, "online_margins": {"cited": 0.02}}
    )
    decision = decide_run(policy, baseline_version="3")
    assert decision.outcome == "awaiting_online" and not decision.promotes
    assert decision.online == OnlineRequirement(50, {"cited": 0.02})
    assert decision.reasons[-1] == (
        "awaits online evidence against v3: ≥ 50 answers per arm, margins: cited 0.02"
    )
    assert decision.to_dict()["online_requirement"] == {
        "min_answers": 50,
        "margins": {"cited": 0.02},
    }
    assert policy.as_params()["policy.min_online_answers"] == "50"
    assert policy.as_params()["policy.online_margin.cited"] == "0.02"


def test_without_a_champion_or_with_manual_approval_online_evidence_does_not_apply() -> None:
    first = decide_run(PromotionPolicy(min_online_answers=50), baseline_version=None)
    assert first.outcome == "champion" and first.online is None
    assert first.reasons[-1] == (
        "online evidence not required: no champion serves to compare with (min_online_answers 50)"
    )
    manual = decide_run(
        PromotionPolicy(min_online_answers=50, approval="manual"), baseline_version="3"
    )
    assert manual.outcome == "awaiting_approval"
    # A candidate the offline comparison holds back never awaits online evidence.
    worse = [comp("token_f1", -0.01, -0.05, 0.03), *held_guards()]
    held = decide_run(
        PromotionPolicy(min_online_answers=50), baseline_version="3", comparisons=worse
    )
    assert held.outcome == "challenger" and held.online is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"min_online_answers": -1}, r"min_online_answers must be >= 0 \(0: off\), got -1"),
        ({"online_margins": {"faithfulness": 0.1}}, r"online_margins names \['faithfulness'\]"),
        ({"online_margins": {"cited": -0.1}}, r"online_margins are allowed regressions"),
    ],
)
def test_bad_online_config_is_refused_naming_the_field(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PromotionPolicy.from_mapping(data)


def test_the_requirement_round_trips_through_version_tags() -> None:
    assert OnlineRequirement.from_tags(REQUIRE_5.as_tags()) == REQUIRE_5
    assert OnlineRequirement.from_tags({}) is None


# --- the registry path ------------------------------------------------------------------------
@pytest.fixture
def registry(tmp_path: Path) -> tuple[MlflowClient, BundleVersion, BundleVersion]:
    """Champion v1 and candidate v2 awaiting online evidence against it (as champion_model
    records an ``awaiting_online`` decision)."""
    store = ensure_mlflow(sqlite_store(tmp_path / "mlflow" / "mlflow.db"), "online")
    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    versions = []
    for k in (2, 3):
        with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
            versions.append(
                register_bundle(client, rag_bundle(retrieval_k=k), run=run, verify=False)
            )
    champion, candidate = versions
    set_bundle_alias(client, DEFAULT_BUNDLE_MODEL, champion.version, CHAMPION,
                     evaluation_run_id="r1", decision_summary="first",
                     expected_champion=None)  # fmt: skip
    move = promote_decided(
        client,
        DEFAULT_BUNDLE_MODEL,
        candidate.version,
        outcome="awaiting_online",
        baseline_version=champion.version,
        evaluation_run_id=candidate.run_id or "",
        decision_summary="awaiting online",
        decision_tags=REQUIRE_5.as_tags(),
    )
    assert (move.alias, current_alias_version(client, DEFAULT_BUNDLE_MODEL, CHAMPION)) == (
        CHALLENGER,
        champion.version,
    )
    return client, champion, candidate


def _tags(client: MlflowClient, version: str) -> dict[str, str]:
    return dict(client.get_model_version(DEFAULT_BUNDLE_MODEL, version).tags)


def _aliases(client: MlflowClient) -> tuple[str | None, str | None]:
    return (
        current_alias_version(client, DEFAULT_BUNDLE_MODEL, CHAMPION),
        current_alias_version(client, DEFAULT_BUNDLE_MODEL, CHALLENGER),
    )


def test_waiting_moves_nothing_and_records_n_of_n(registry) -> None:
    client, champion, candidate = registry
    settled = settle_online(client, DEFAULT_BUNDLE_MODEL, candidate.version, rows(n=(3, 7)))
    assert settled is not None and settled.action == "waiting"
    assert _aliases(client) == (champion.version, candidate.version)
    tags = _tags(client, candidate.version)
    assert tags[TAG_OUTCOME] == "awaiting_online"
    assert tags[TAG_ONLINE_VERDICT].startswith("waiting (3 of 5): waiting for online evidence")


def test_non_inferior_online_promotes_and_clears_the_challenger_alias(registry) -> None:
    client, champion, candidate = registry
    settled = settle_online(client, DEFAULT_BUNDLE_MODEL, candidate.version, rows())
    assert settled is not None and settled.action == "promoted"
    assert _aliases(client) == (candidate.version, None)
    tags = _tags(client, candidate.version)
    assert tags[TAG_OUTCOME] == "champion"
    assert tags["previous_champion"] == champion.version
    assert tags["decision"].startswith("champion after online evidence: online non-inferior")
    # Settled once: the version no longer awaits anything.
    assert settle_online(client, DEFAULT_BUNDLE_MODEL, candidate.version, rows()) is None


def test_inferior_online_is_refused_and_loses_the_challenger_alias(registry) -> None:
    client, champion, candidate = registry
    worse = rows(cited=(-0.3, -0.5, -0.1))
    settled = settle_online(client, DEFAULT_BUNDLE_MODEL, candidate.version, worse)
    assert settled is not None and settled.action == "refused"
    assert _aliases(client) == (champion.version, None)
    assert _tags(client, candidate.version)[TAG_OUTCOME] == "refused_online"


def test_a_champion_moved_since_the_decision_makes_it_stale_and_moves_nothing(registry) -> None:
    client, champion, candidate = registry
    store_uri = client.tracking_uri
    store = ensure_mlflow(store_uri, "online")
    with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
        other = register_bundle(client, rag_bundle(retrieval_k=4), run=run, verify=False)
    set_bundle_alias(client, DEFAULT_BUNDLE_MODEL, other.version, CHAMPION, evaluation_run_id="r",
                     decision_summary="elsewhere", expected_champion=champion.version)  # fmt: skip
    settled = settle_online(client, DEFAULT_BUNDLE_MODEL, candidate.version, rows())
    assert settled is not None and settled.action == "stale"
    assert "nothing moved" in settled.detail
    assert _aliases(client) == (other.version, candidate.version)
    assert _tags(client, candidate.version)[TAG_OUTCOME] == "stale"


def test_a_challenger_not_awaiting_online_evidence_is_left_alone(registry) -> None:
    client, _, candidate = registry
    client.set_model_version_tag(DEFAULT_BUNDLE_MODEL, candidate.version, TAG_OUTCOME, "challenger")
    assert settle_online(client, DEFAULT_BUNDLE_MODEL, candidate.version, rows()) is None
