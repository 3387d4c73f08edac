"""Online non-inferiority before promotion, on real requests (``build_service``: real
Elasticsearch with the sample corpus, MLflow registry and traces on SQLite, the `serve` assets
through Dagster into DuckDB): the set-up of ``test_rollout.py`` with a 50 % split.

1. A champion decision under ``min_online_answers=4`` (the offline comparison would promote)
   leaves the champion where it is and the candidate ``challenger``, ``awaiting_online``.
2. After 2 answers per arm ``serving_metrics`` waits (2 of 4); after 4 good answers per arm
   (thumbs-up on both) it promotes the candidate, compare-and-set, and drops the challenger.
3. A second candidate whose answers users rate down (thumbs-down on every challenger answer,
   up on the champion's) is refused online: ``refused_online``, challenger alias removed,
   champion unmoved.
4. Online judging of those real requests: a challenger made worse on purpose (its prompt drops
   the context, the model answers blind) is served to half the callers; ``serving_judgments``
   for the day scores its answers, writes the assessments on exactly its traces and warns.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from assets.serving import build_serving_load_assets
from assets.serving import serving_metrics as serving_metrics_asset
from llmops_dagster.config import Settings
from llmops_dagster.evaluate.compare import MetricComparison
from llmops_dagster.evaluate.gate import current_alias_version
from llmops_dagster.evaluate.policy import Decision, PromotionPolicy, decide
from llmops_dagster.rag.bundle import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_BUNDLE_MODEL,
    TAG_OUTCOME,
    BundleVersion,
    promote_decided,
    register_bundle,
)
from llmops_dagster.resources import build_resources
from llmops_dagster.serving.app import create_app
from llmops_dagster.serving.auth import KeyStore, add_key
from llmops_dagster.serving.rollout import RolloutPlan, arm_for
from llmops_dagster.serving.testbed import index_sample_corpus, promote, register_test_bundles
from llmops_dagster.serving.wiring import build_service
from llmops_dagster.tracking.mlflow_store import ensure_mlflow
from llmops_dagster.tracking.runs import open_run
from tests.conftest import asset_metadata, drop_indices
from tests.support.settings import isolated_settings
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

N = 4
QUESTION = "In which year was Northwind Drones founded?"
CALLERS = [f"caller-{n:02d}" for n in range(20)]


@dataclasses.dataclass
class World:
    settings: Settings
    client: MlflowClient
    champion: BundleVersion
    key_file: Path
    keys: dict[str, str]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    es_settings: Settings,
    es_client: Elasticsearch,
    sample_dir: Path,
    sample_embeddings: Path,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("online")
    alias = f"online-{uuid.uuid4().hex[:8]}"
    previous_uri = mlflow.get_tracking_uri()
    settings = isolated_settings(
        tmp / "home",
        elasticsearch={"url": es_settings.elasticsearch.url, "index_alias": alias},
        models={"torch_threads": 1},
        # The traces were written a moment ago: the test does not wait for them to settle.
        serving={"bundle_poll_s": 3600.0, "trace_settle_s": 0.0},
    )
    try:
        copy_embedding_cache(sample_embeddings, settings)
        index_sample_corpus(settings, sample_dir)
        champion = register_test_bundles(settings)["extractive"]
        client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
        promote(client, champion, "online test: the champion")
        key_file = tmp / "api-keys.json"
        api_keys = {name: add_key(key_file, name, [])[1] for name in CALLERS}
        yield World(settings, client, champion, key_file, api_keys)
    finally:
        mlflow.set_tracking_uri(previous_uri)
        drop_indices(es_client, alias)


def _offline_champion_decision(baseline_version: str) -> Decision:
    """What the offline comparison decides for a clearly better candidate, under a policy that
    asks for N answers online (the comparison rows stand in for a golden-set evaluation)."""
    better = [
        MetricComparison("token_f1", 40, 0.55, 0.5, 0.05, 0.01, 0.09, True),
        *[MetricComparison(m, 40, 0.8, 0.8, 0.0, -0.01, 0.01, True)
          for m in ("recall_at_5", "ndcg_at_10", "mrr_at_10")],
    ]  # fmt: skip
    return decide(
        PromotionPolicy(min_online_answers=N, online_margins={"cited": 0.05, "thumbs_down": 0.1}),
        n_cases=40,
        aggregates={"recall_at_5": 0.9, "ndcg_at_10": 0.8, "token_f1": 0.3},
        comparisons=better,
        baseline_label=f"champion v{baseline_version}",
        baseline_version=baseline_version,
    )


def _candidate(world: World, k: int, baseline: BundleVersion) -> BundleVersion:
    """A wider-retrieval extractive bundle, decided and applied as `champion_model` does."""
    store = ensure_mlflow(world.settings.mlflow_uri, world.settings.mlflow.experiment)
    with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
        candidate = register_bundle(
            world.client, dataclasses.replace(world.champion.bundle, retrieval_k=k), run=run
        )
    decision = _offline_champion_decision(baseline.version)
    assert decision.outcome == "awaiting_online"
    move = promote_decided(
        world.client,
        DEFAULT_BUNDLE_MODEL,
        candidate.version,
        outcome=decision.outcome,
        baseline_version=decision.baseline_version,
        evaluation_run_id=run.run_id,
        decision_summary=decision.summary(),
        decision_tags=decision.online.as_tags() if decision.online is not None else None,
    )
    assert move.alias == CHALLENGER
    return candidate


def _aliases(world: World) -> tuple[str | None, str | None]:
    return (
        current_alias_version(world.client, DEFAULT_BUNDLE_MODEL, CHAMPION),
        current_alias_version(world.client, DEFAULT_BUNDLE_MODEL, CHALLENGER),
    )


def _outcome(world: World, version: BundleVersion) -> str:
    return world.client.get_model_version(DEFAULT_BUNDLE_MODEL, version.version).tags[TAG_OUTCOME]


def _callers(challenger: str) -> dict[str, list[str]]:
    plan = RolloutPlan("split", 0.5)
    arms: dict[str, list[str]] = {"champion": [], "challenger": []}
    for caller in CALLERS:
        arms[arm_for(plan, caller, challenger)].append(caller)
    assert len(arms["champion"]) >= N and len(arms["challenger"]) >= N
    return arms


def _serve_and_rate(
    world: World, callers: list[str], rating: dict[str, str]
) -> list[tuple[str, str]]:
    """One real question per caller through a fresh 50 % split service, each answer rated
    through /v1/feedback by its caller (``rating``: arm → up/down); (arm, trace id) per
    answer."""
    service = build_service(world.settings.override(serving={"rollout": "split",
                                                             "challenger_share": 0.5}))  # fmt: skip
    arms = []
    with TestClient(create_app(service, KeyStore(world.key_file))) as http:
        for caller in callers:
            auth = {"Authorization": f"Bearer {world.keys[caller]}"}
            body = http.post("/v1/answer", json={"question": QUESTION}, headers=auth)
            assert body.status_code == 200, body.text
            arm = body.json()["rollout"]
            arms.append((arm, body.json()["trace_id"]))
            rated = http.post(
                "/v1/feedback",
                json={"trace_id": body.json()["trace_id"], "rating": rating[arm]},
                headers=auth,
            )
            assert rated.status_code == 200, rated.text
        service.tracer.flush()
    service.close()
    return arms


def _serving_metrics(world: World, instance: dg.DagsterInstance) -> dict:
    result = dg.materialize(
        [build_serving_load_assets(world.settings.warehouse_target()), serving_metrics_asset],
        resources=build_resources(world.settings),
        instance=instance,
    )
    assert result.success
    return asset_metadata(result, "serving_metrics")


def test_a_challenger_becomes_champion_only_after_n_good_answers_and_a_worse_one_is_refused(
    world: World,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    good = {"champion": "up", "challenger": "up"}
    # 1. The offline decision says champion; the policy asks for N answers online first.
    candidate = _candidate(world, 3, world.champion)
    assert _aliases(world) == (world.champion.version, candidate.version)
    assert _outcome(world, candidate) == "awaiting_online"
    arms = _callers(candidate.version)
    # 2. Two answers per arm: waiting, n of N as numbers; nothing moves.
    served = _serve_and_rate(world, arms["challenger"][:2] + arms["champion"][:2], good)
    assert sorted(arm for arm, _ in served) == ["challenger"] * 2 + ["champion"] * 2
    waiting = _serving_metrics(world, instance)
    assert (waiting["online_gate"], waiting["online_verdict"]) == ("waiting", "waiting")
    assert (waiting["online_answers"], waiting["online_answers_required"]) == (2, N)
    assert _aliases(world) == (world.champion.version, candidate.version)
    # N good answers per arm: non-inferior online → promoted against the recorded champion.
    _serve_and_rate(world, arms["challenger"][2:N] + arms["champion"][2:N], good)
    promoted = _serving_metrics(world, instance)
    assert (promoted["online_gate"], promoted["online_verdict"]) == ("promoted", "ok")
    assert (promoted["online_answers/challenger"], promoted["online_answers/champion"]) == (N, N)
    assert _aliases(world) == (candidate.version, None)
    assert _outcome(world, candidate) == "champion"
    # 3. A worse challenger: users rate every one of its answers down.
    worse = _candidate(world, 4, candidate)
    arms = _callers(worse.version)
    _serve_and_rate(
        world,
        arms["challenger"][:N] + arms["champion"][:N],
        {"champion": "up", "challenger": "down"},
    )
    refused = _serving_metrics(world, instance)
    assert (refused["online_gate"], refused["online_verdict"]) == ("refused", "refused")
    assert "thumbs_down diff +1.0000 [+1.0000, +1.0000]" in refused["online_reason"]
    assert _aliases(world) == (candidate.version, None)
    assert _outcome(world, worse) == "refused_online"


def test_real_answers_of_a_bundle_whose_prompt_drops_the_context_are_judged_and_warned(
    world: World,
) -> None:
    """Real requests → traces → ``serving_judgments`` for today → an assessment on each of the
    blind bundle's traces (no valid citation: 0.0) and the WARN check naming that bundle."""
    from datetime import UTC, datetime

    from assets.judgments import ONLINE_CHECK, serving_judgments
    from llmops_dagster.rag.bundle import RagBundle, set_bundle_alias
    from llmops_dagster.rag.prompt_registry import sync_prompt
    from llmops_dagster.rag.prompts import PromptTemplate, load_prompt

    champion = current_alias_version(world.client, DEFAULT_BUNDLE_MODEL, CHAMPION)
    repo = load_prompt()
    blind_text = repo.text.replace("Context:\n{{context}}\n\n", "")
    assert "{{context}}" not in blind_text
    mlflow.set_tracking_uri(world.settings.mlflow_uri)  # the prompt registry's fluent state
    blind = sync_prompt(world.client, PromptTemplate.from_text("rag_answer_blind", blind_text))
    pin = build_resources(world.settings)["models"].generator_pin()
    bundle = dataclasses.replace(
        world.champion.bundle,
        **RagBundle.generator_fields(pin),
        prompt_uri=blind.uri,
        prompt_version=blind.content_hash,
        max_new_tokens=16,
    )
    store = ensure_mlflow(world.settings.mlflow_uri, world.settings.mlflow.experiment)
    with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
        worse = register_bundle(world.client, bundle, run=run)
    set_bundle_alias(
        world.client,
        DEFAULT_BUNDLE_MODEL,
        worse.version,
        CHALLENGER,
        evaluation_run_id=run.run_id,
        decision_summary="made worse on purpose: the prompt drops the context",
    )
    arms = _callers(worse.version)
    served = _serve_and_rate(
        world, arms["challenger"][:3] + arms["champion"][:3], {"champion": "up", "challenger": "up"}
    )
    blind_traces = sorted(t for arm, t in served if arm == "challenger")
    assert len(blind_traces) == 3

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    result = dg.materialize(
        [build_serving_load_assets(world.settings.warehouse_target()), serving_judgments],
        resources=build_resources(world.settings),
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=day,
        selection=["serving_traces", "serving_feedback", "serving_judgments"],
    )
    assert result.success
    meta = asset_metadata(result, "serving_judgments")
    assert meta[f"mean/{worse.version}/citation_validity"] == 0.0
    assert meta[f"mean/{champion}/citation_validity"] == 1.0
    for trace_id in blind_traces:
        info = world.client.get_trace(trace_id).info
        judged = [(a.name, a.value) for a in info.assessments or [] if a.name.startswith("judge.")]
        assert judged == [("judge.citation_validity", 0.0)]
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == (ONLINE_CHECK, False)
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith(f"bundle {worse.version}: online citation_validity 0.000")
    assert f"bundle {champion}:" not in check.description
