"""Prompt registry and RAG bundles against a real MLflow SQLite store: sync/load round trips,
aliases, the promotion audit trail and rollback. One store per module (its schema takes ~10 s
to create); each test uses its own prompt and bundle names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from llmops_dagster.evaluate.gate import RollbackError
from llmops_dagster.models.spec import GeneratorPin
from llmops_dagster.rag.bundle import (
    TAG_BASELINE_VERSION,
    TAG_BUNDLE_KEY,
    TAG_OUTCOME,
    AliasMove,
    BundleError,
    BundleVersion,
    RagBundle,
    StaleDecisionError,
    approve_bundle,
    current_champion,
    load_bundle,
    promote_decided,
    register_bundle,
    rollback_bundle,
    set_bundle_alias,
)
from llmops_dagster.rag.prompt_registry import (
    TAG_CONTENT_HASH,
    PromptRegistryError,
    RegisteredPrompt,
    load_registered_prompt,
    set_prompt_alias,
    sync_prompt,
)
from llmops_dagster.rag.prompts import PromptTemplate, load_prompt
from llmops_dagster.tracking.mlflow_store import MlflowStore, ensure_mlflow
from llmops_dagster.tracking.runs import RunHandle, open_run
from tests.support.stubs import rag_bundle
from tests.support.tracking import sqlite_store

pytestmark = pytest.mark.integration

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
DIGEST = "sha256:" + "0" * 64
EXTRACTIVE = RagBundle.generator_fields(GeneratorPin("builtin", "extractive:v1"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> MlflowStore:
    tmp_path: Path = tmp_path_factory.mktemp("mlflow")
    return ensure_mlflow(sqlite_store(tmp_path / "mlflow.db"), "t")


@pytest.fixture
def client(store: MlflowStore) -> MlflowClient:
    return MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)


@pytest.fixture
def run(store: MlflowStore) -> Iterator[RunHandle]:
    with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://mlflow.test") as r:
        yield r


@pytest.fixture
def register(client: MlflowClient, store: MlflowStore) -> Callable[..., BundleVersion]:
    """register_bundle in a run of its own (one bundle per run), like an evaluation does."""

    def _register(bundle: RagBundle, name: str, **kwargs: Any) -> BundleVersion:
        with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
            return register_bundle(client, bundle, run=run, name=name, **kwargs)

    return _register


def make_bundle(prompt: RegisteredPrompt, **changes: object) -> RagBundle:
    fields = {
        "prompt_uri": prompt.uri,
        "prompt_version": prompt.content_hash,
        "retrieval_mode": "hybrid",
        "max_new_tokens": 128,
    }
    return rag_bundle(GeneratorPin("local", BASE, DIGEST, 0.0, 1.1), **{**fields, **changes})


def version_tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, version).tags)


def test_sync_prompt_registers_on_change_and_round_trips(client: MlflowClient) -> None:
    template = load_prompt()  # the repo file llmops_dagster/prompts/rag_answer.md
    first = sync_prompt(client, template)
    assert (first.name, first.version, first.uri) == ("rag_answer", 1, "prompts:/rag_answer/1")
    assert first.content_hash == template.version and first.template == template
    assert client.get_prompt_version("rag_answer", 1).tags[TAG_CONTENT_HASH] == template.version

    assert sync_prompt(client, template).version == 1  # unchanged text: nothing registered
    assert sync_prompt(client, load_prompt()).version == 1

    edited = PromptTemplate.from_text("rag_answer", template.text + "\nKeep it short.")
    second = sync_prompt(client, edited)
    assert second.version == 2 and second.content_hash == edited.version != template.version
    assert sync_prompt(client, edited).version == 2

    loaded = load_registered_prompt(client, "prompts:/rag_answer/1")
    assert loaded.template == template  # same name, text and content-hash version as the file
    assert loaded.template.version == template.version
    assert loaded.template.messages("q?", []) == template.messages("q?", [])
    assert load_registered_prompt(client, "prompts:/rag_answer/2").template == edited

    set_prompt_alias(client, "rag_answer", "production", 1)
    by_alias = load_registered_prompt(client, "prompts:/rag_answer@production")
    assert by_alias.uri == "prompts:/rag_answer/1" and by_alias.template == template
    set_prompt_alias(client, "rag_answer", "production", 2)
    assert load_registered_prompt(client, "prompts:/rag_answer@production").version == 2

    # Reverting the file is a new version: history only moves forward.
    assert sync_prompt(client, template).version == 3


def test_unknown_prompts_raise_clear_errors(client: MlflowClient, store: MlflowStore) -> None:
    known = sync_prompt(client, load_prompt(), name="known")  # another name, same template
    assert known.uri == "prompts:/known/1"
    assert load_registered_prompt(client, known.uri).template == load_prompt()
    for uri in ("prompts:/missing-prompt/1", "prompts:/known/7", "prompts:/known@nope"):
        with pytest.raises(PromptRegistryError) as caught:
            load_registered_prompt(client, uri)
        assert uri in str(caught.value) and store.tracking_uri in str(caught.value)
    with pytest.raises(PromptRegistryError, match="is not prompts:/<name>/<version>"):
        load_registered_prompt(client, "prompts:known/1")
    with pytest.raises(PromptRegistryError, match="prompts:/known/9"):
        set_prompt_alias(client, "known", "production", 9)
    client.create_registered_model("plain-model")
    with pytest.raises(PromptRegistryError, match="plain-model"):
        sync_prompt(client, load_prompt(), name="plain-model")


def test_register_and_load_bundles(
    client: MlflowClient, store: MlflowStore, run: RunHandle, register: Callable[..., BundleVersion]
) -> None:
    name = "bundles-register"
    prompt = sync_prompt(client, load_prompt(), name="p-register")
    b1 = make_bundle(prompt)
    b2 = make_bundle(prompt, **EXTRACTIVE, retrieval_k=5)
    v1 = register_bundle(client, b1, run=run, name=name)
    assert register_bundle(client, b1, run=run, name=name).version == "2"  # same bundle: allowed
    with pytest.raises(BundleError, match="already registered bundle"):
        register_bundle(client, b2, run=run, name=name)  # would overwrite v1's bundle.json
    v3 = register(b2, name)
    assert (v1.version, v3.version) == ("1", "3") and v1.run_id == run.run_id != v3.run_id
    assert v1.uri == f"models:/{name}/1"

    downloads = Path(store.tracking_uri.removeprefix("sqlite:///")).parent / "downloads"
    for registered, bundle in ((v1, b1), (v3, b2)):
        loaded = load_bundle(client, registered.uri)
        assert loaded.bundle == bundle and loaded.run_id == registered.run_id
        assert loaded.tags[TAG_BUNDLE_KEY] == bundle.key()
        mv = client.get_model_version(name, registered.version)
        artifact_uri = client.get_run(registered.run_id).info.artifact_uri
        assert mv.source == f"{artifact_uri}/bundle"
        target = downloads / registered.version
        target.mkdir(parents=True)
        local = client.download_artifacts(registered.run_id, "bundle/bundle.json", str(target))
        assert RagBundle.from_dict(json.loads(Path(local).read_text())) == bundle

    set_bundle_alias(client, name, 3, "challenger", evaluation_run_id="e", decision_summary="s")
    assert load_bundle(client, f"models:/{name}@challenger").bundle == b2
    assert current_champion(client, name) is None


def test_champion_promotion_audit_trail_and_rollback(
    client: MlflowClient, register: Callable[..., BundleVersion]
) -> None:
    name = "bundles-champion"
    prompt = sync_prompt(client, load_prompt(), name="p-champion")
    v1 = register(make_bundle(prompt), name).version
    v2 = register(make_bundle(prompt, retrieval_k=5), name).version

    first = set_bundle_alias(
        client, name, v1, "champion", evaluation_run_id="eval-1", decision_summary="gate passed",
        expected_champion=None,
    )  # fmt: skip
    assert first == AliasMove(previous_version=None, new_version="1", alias="champion")
    tags = version_tags(client, name, v1)
    assert tags["previous_champion"] == "" and tags["champion_evaluation_run_id"] == "eval-1"
    assert tags["decision"] == "gate passed" and tags["champion_promoted_at"]
    assert current_champion(client, name).version == "1"

    long_summary = "x" * 6000
    second = set_bundle_alias(
        client, name, v2, "champion", evaluation_run_id="eval-2", decision_summary=long_summary,
        expected_champion="1",
    )  # fmt: skip
    assert second == AliasMove("1", "2", "champion") and second.moved
    tags = version_tags(client, name, v2)
    assert tags["previous_champion"] == "1" and tags["champion_evaluation_run_id"] == "eval-2"
    assert len(tags["decision"]) == 5000
    assert version_tags(client, name, v1)["champion_replaced_by"] == "2"
    assert current_champion(client, name).bundle.retrieval_k == 5

    again = set_bundle_alias(
        client, name, v2, "champion", evaluation_run_id="x", decision_summary="",
        expected_champion="2",
    )  # fmt: skip
    assert not again.moved and version_tags(client, name, v2)["previous_champion"] == "1"

    back = rollback_bundle(client, name)
    assert back == AliasMove("2", "1", "champion")
    assert current_champion(client, name).version == "1"
    assert version_tags(client, name, v1)["champion_rolled_back_from"] == "2"
    assert version_tags(client, name, v2)["champion_replaced_by"] == "1"
    with pytest.raises(RollbackError, match="previous_champion"):
        rollback_bundle(client, name)  # v1 was the first champion


def test_rollback_without_previous_champion_errors(client: MlflowClient, run: RunHandle):
    name = "bundles-no-previous"
    with pytest.raises(RollbackError, match="no @champion"):
        rollback_bundle(client, name)
    prompt = sync_prompt(client, load_prompt(), name="p-no-previous")
    v1 = register_bundle(client, make_bundle(prompt), run=run, name=name).version
    set_bundle_alias(client, name, v1, "champion", evaluation_run_id="e", decision_summary="ok",
                     expected_champion=None)  # fmt: skip
    with pytest.raises(RollbackError, match="records no previous_champion"):
        rollback_bundle(client, name)
    assert current_champion(client, name).version == v1


def test_challenger_moves_without_touching_champion(
    client: MlflowClient, register: Callable[..., BundleVersion]
) -> None:
    name = "bundles-challenger"
    prompt = sync_prompt(client, load_prompt(), name="p-challenger")
    versions = [register(make_bundle(prompt, retrieval_k=k), name).version for k in (1, 2, 3)]
    set_bundle_alias(client, name, versions[0], "champion", evaluation_run_id="e0",
                     decision_summary="first", expected_champion=None)  # fmt: skip
    champion_tags = version_tags(client, name, versions[0])

    moved = set_bundle_alias(client, name, versions[1], "challenger", evaluation_run_id="e1",
                             decision_summary="candidate")  # fmt: skip
    assert moved == AliasMove(None, "2", "challenger")
    tags = version_tags(client, name, versions[1])
    assert tags["challenger_evaluation_run_id"] == "e1" and tags["challenger_set_at"]
    assert "previous_champion" not in tags
    moved = set_bundle_alias(client, name, versions[2], "challenger", evaluation_run_id="e2",
                             decision_summary="candidate")  # fmt: skip
    assert moved == AliasMove("2", "3", "challenger")
    assert load_bundle(client, f"models:/{name}@challenger").bundle.retrieval_k == 3

    assert current_champion(client, name).version == versions[0]
    assert version_tags(client, name, versions[0]) == champion_tags


def test_register_checks_prompt_and_adapter_references(client: MlflowClient, run: RunHandle):
    name = "bundles-verify"
    prompt = sync_prompt(client, load_prompt(), name="p-verify")
    with pytest.raises(BundleError, match="hashes to"):
        register_bundle(client, make_bundle(prompt, prompt_version="0" * 12), run=run, name=name)
    with pytest.raises(BundleError, match="prompts:/p-verify/5"):
        register_bundle(client, make_bundle(prompt, prompt_uri="prompts:/p-verify/5"), run=run,
                        name=name)  # fmt: skip
    with pytest.raises(BundleError, match="adapters-verify"):
        register_bundle(client, make_bundle(prompt, adapter_uri="models:/adapters-verify/1"),
                        run=run, name=name)  # fmt: skip

    client.create_registered_model("adapters-verify")
    client.create_model_version("adapters-verify", source=f"{run.artifact_uri}/adapter",
                                tags={"llmops.base_model_id": "other/base-model"})  # fmt: skip
    with_adapter = make_bundle(prompt, adapter_uri="models:/adapters-verify/1")
    with pytest.raises(BundleError, match="trained on other/base-model"):
        register_bundle(client, with_adapter, run=run, name=name)
    registered = register_bundle(client, with_adapter, run=run, name=name, verify=False)
    assert load_bundle(client, registered.uri).bundle.adapter_uri == "models:/adapters-verify/1"


def test_load_bundle_errors(client: MlflowClient, store: MlflowStore, run: RunHandle):
    name = "bundles-errors"
    prompt = sync_prompt(client, load_prompt(), name="p-errors")
    version = register_bundle(client, make_bundle(prompt), run=run, name=name).version
    for ref in (f"models:/{name}/9", f"models:/{name}@champion", "models:/no-such-bundles/1"):
        with pytest.raises(BundleError) as caught:
            load_bundle(client, ref)
        assert ref in str(caught.value) and store.tracking_uri in str(caught.value)
    with pytest.raises(BundleError, match="is not models:/"):
        load_bundle(client, f"{name}/1")
    with pytest.raises(BundleError, match="9"):
        set_bundle_alias(client, name, 9, "champion", evaluation_run_id="e", decision_summary="",
                         expected_champion=None)  # fmt: skip

    client.create_model_version(name, source=f"{run.artifact_uri}/other", run_id=run.run_id)
    with pytest.raises(BundleError, match="not a RAG bundle"):
        load_bundle(client, f"models:/{name}/2")
    client.set_model_version_tag(name, version, "bundle.retrieval_k", "9")
    with pytest.raises(BundleError, match="edited"):
        load_bundle(client, f"models:/{name}/{version}")
    client.set_model_version_tag(name, version, "bundle.surprise", "x")
    with pytest.raises(BundleError, match="unknown \\['surprise'\\]"):
        load_bundle(client, f"models:/{name}/{version}")


def test_champion_moves_only_from_the_champion_the_decision_compared_with(
    client: MlflowClient, register: Callable[..., BundleVersion]
) -> None:
    """Compare-and-set: two candidates decided against v1; the second promotion finds v2 there
    and is refused as stale — nothing moves, the version says why."""
    name = "bundles-cas"
    prompt = sync_prompt(client, load_prompt(), name="p-cas")
    v1, v2, v3 = (register(make_bundle(prompt, retrieval_k=k), name).version for k in (1, 2, 3))
    with pytest.raises(BundleError, match="needs expected_champion"):
        set_bundle_alias(client, name, v1, "champion", evaluation_run_id="e", decision_summary="")
    first = promote_decided(
        client,
        name,
        v1,
        outcome="champion",
        baseline_version=None,
        evaluation_run_id="e1",
        decision_summary="beat the base model",
    )
    assert first == AliasMove(None, "1", "champion")

    # v2 and v3 were both compared with v1; v2 is promoted first.
    assert promote_decided(
        client,
        name,
        v2,
        outcome="champion",
        baseline_version="1",
        evaluation_run_id="e2",
        decision_summary="beat v1",
    ).moved
    with pytest.raises(StaleDecisionError) as stale:
        promote_decided(
            client,
            name,
            v3,
            outcome="champion",
            baseline_version="1",
            evaluation_run_id="e3",
            decision_summary="beat v1",
        )
    assert str(stale.value) == (
        f"{name} v3 was compared with v1, but @champion is now v2: nothing moved. Re-evaluate v3 "
        "against today's champion (the evaluate_candidate job) before promoting it."
    )
    assert current_champion(client, name).version == "2"
    tags = version_tags(client, name, v3)
    assert (tags[TAG_OUTCOME], tags[TAG_BASELINE_VERSION]) == ("stale", "1")
    assert "previous_champion" not in tags
    assert version_tags(client, name, v2)["previous_champion"] == "1"

    # A decision made when there was no champion is stale once there is one.
    with pytest.raises(StaleDecisionError, match="compared with the base model"):
        promote_decided(
            client,
            name,
            v3,
            outcome="champion",
            baseline_version=None,
            evaluation_run_id="e3",
            decision_summary="beat the base model",
        )
    # A challenger never needs the check: it replaces nothing.
    moved = promote_decided(
        client,
        name,
        v3,
        outcome="challenger",
        baseline_version="1",
        evaluation_run_id="e3",
        decision_summary="lost to v1",
    )
    assert moved == AliasMove(None, "3", "challenger")
    assert current_champion(client, name).version == "2"


def test_approval_rechecks_the_champion_it_was_compared_with(
    client: MlflowClient, register: Callable[..., BundleVersion]
) -> None:
    name = "bundles-approve"
    prompt = sync_prompt(client, load_prompt(), name="p-approve")
    v1, v2, v3 = (register(make_bundle(prompt, retrieval_k=k), name).version for k in (1, 2, 3))
    promote_decided(
        client,
        name,
        v1,
        outcome="champion",
        baseline_version=None,
        evaluation_run_id="e1",
        decision_summary="first",
    )
    for version in (v2, v3):  # both wait for a person, both compared with v1
        promote_decided(
            client,
            name,
            version,
            outcome="awaiting_approval",
            baseline_version="1",
            evaluation_run_id=f"e{version}",
            decision_summary="passed",
        )
    with pytest.raises(BundleError, match="was decided 'champion'"):
        approve_bundle(client, name, v1, approver="alice")

    assert approve_bundle(client, name, v2, approver="alice") == AliasMove("1", "2", "champion")
    assert version_tags(client, name, v2)["approved_by"] == "alice"
    # Days later, v3's approval would replace v2 — a bundle it was never compared with.
    with pytest.raises(StaleDecisionError, match="compared with v1, but @champion is now v2"):
        approve_bundle(client, name, v3, approver="bob")
    assert current_champion(client, name).version == "2"
    assert "approved_by" not in version_tags(client, name, v3)
