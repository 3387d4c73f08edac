"""The candidate evaluation's registry side against a real MLflow SQLite store: which bundles
answer (the base model until there is a champion, the named or newest adapter), what is
recorded and registered, and reading back the cases the champion was promoted on.

The answers come from stand-in pipelines (``tests/unit/test_eval_candidate.py``): what is
tested here is the MLflow side, which the unit tests cannot reach.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from llmops_dagster.evaluate.bundle_eval import DECISION_ARTIFACT
from llmops_dagster.evaluate.candidate import (
    CandidateError,
    CandidateRequest,
    evaluate_candidate,
    record_evaluation,
    recorded_cases,
    resolve_sides,
)
from llmops_dagster.evaluate.metrics import TokenF1
from llmops_dagster.evaluate.policy import PromotionPolicy
from llmops_dagster.models.spec import GeneratorPin
from llmops_dagster.rag.bundle import (
    TAG_BASELINE_VERSION,
    TAG_GENERATOR_LOCATION,
    TAG_OUTCOME,
    load_bundle,
    promote_decided,
)
from llmops_dagster.rag.prompt_registry import RegisteredPrompt, sync_prompt
from llmops_dagster.rag.prompts import load_prompt
from llmops_dagster.tracking.mlflow_store import MlflowStore, ensure_mlflow
from llmops_dagster.tracking.runs import open_run
from tests.unit.test_eval_candidate import GOLDEN, REFERENCE, AnswersAlike

pytestmark = pytest.mark.integration

ADAPTERS = "adapters"
LLM = GeneratorPin("local", "HuggingFaceTB/SmolLM2-135M-Instruct", "sha256:" + "0" * 64, 0.0, 1.1)
REQUEST = CandidateRequest("extractive", None, "hybrid_rrf", 3, 10, 32)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> MlflowStore:
    tmp_path: Path = tmp_path_factory.mktemp("mlflow")
    return ensure_mlflow(f"sqlite:///{tmp_path}/mlflow.db", "t")


@pytest.fixture(scope="module")
def client(store: MlflowStore) -> MlflowClient:
    return MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)


@pytest.fixture(scope="module")
def prompt(client: MlflowClient) -> RegisteredPrompt:
    return sync_prompt(client, load_prompt(), name="p-candidate")


def _sides(
    client: MlflowClient,
    prompt: RegisteredPrompt,
    request: CandidateRequest,
    name: str,
    index_name: str | None = "chunks-v2",
):
    return resolve_sides(
        client,
        request,
        llm_pin=LLM,
        prompt_uri=prompt.uri,
        prompt_version=prompt.content_hash,
        embedding_model_id="all-MiniLM-L6-v2",
        index_name=index_name,
        index_alias="chunks",
        adapter_model_name=ADAPTERS,
        bundle_model=name,
    )


def _evaluate_and_record(
    store: MlflowStore, client: MlflowClient, prompt: RegisteredPrompt, name: str, answer: str
):
    sides = _sides(client, prompt, REQUEST, name)
    pipelines = {"extractive": AnswersAlike(answer), "llm": AnswersAlike("no idea")}
    evaluation = evaluate_candidate(
        sides,
        GOLDEN,
        pipeline_for=lambda bundle, tags: pipelines[bundle.generator],  # type: ignore[arg-type]
        metrics=[TokenF1()],
        policy=PromotionPolicy(guards={}, minimums={"token_f1": 0.5}),
        n_resamples=200,
        recorded=lambda run_id: recorded_cases(client, run_id),
    )
    with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
        registered = record_evaluation(
            run,
            client,
            evaluation,
            prompt_uri=prompt.uri,
            generator_location={"model": "m"},
            bundle_model=name,
        )
    return evaluation, registered


def test_the_candidate_is_recorded_registered_and_its_cases_read_back_as_the_champions(
    store: MlflowStore, client: MlflowClient, prompt: RegisteredPrompt
) -> None:
    name = "bundles-record"
    first, registered = _evaluate_and_record(store, client, prompt, name, REFERENCE)
    assert first.sides.baseline_label == "base model (no champion yet)"
    assert first.decision.outcome == "champion"
    assert load_bundle(client, registered.uri).bundle == first.sides.candidate
    version_tags = client.get_model_version(name, registered.version).tags
    assert TAG_GENERATOR_LOCATION not in version_tags  # an extractive candidate has no model
    run = client.get_run(registered.run_id)
    assert run.data.tags[TAG_OUTCOME] == "champion"
    assert run.data.tags[TAG_BASELINE_VERSION] == ""
    assert run.data.metrics["compare.token_f1.diff"] == 1.0
    decision = Path(client.download_artifacts(run.info.run_id, DECISION_ARTIFACT))
    assert json.loads(decision.read_text())["outcome"] == "champion"
    cases = recorded_cases(client, registered.run_id)
    assert [(c["case_id"], c["token_f1"]) for c in cases] == [(f"q{i}", 1.0) for i in range(30)]

    promote_decided(
        client,
        name,
        registered.version,
        outcome="champion",
        baseline_version=None,
        evaluation_run_id=registered.run_id,
        decision_summary=first.decision.summary(),
    )
    # The next evaluation compares with that champion, on today's index, and checks that the
    # champion (answering "no idea" today) still holds up against the cases recorded above.
    second, _ = _evaluate_and_record(store, client, prompt, name, "no idea")
    assert second.sides.baseline_label == f"champion models:/{name}/{registered.version}"
    assert second.sides.baseline == first.sides.candidate
    assert second.decision.baseline_version == registered.version
    assert second.regression is not None and second.regression.regressed
    assert second.regression.recorded_run_id == registered.run_id


def _adapter_version(store: MlflowStore, client: MlflowClient) -> str:
    mlflow.set_tracking_uri(store.tracking_uri)
    with mlflow.start_run(experiment_id=store.experiment_id) as run:
        mlflow.log_text('{"r": 8}', "adapter/adapter_config.json")
    with contextlib.suppress(mlflow.exceptions.MlflowException):  # created by the first call
        client.create_registered_model(ADAPTERS)
    source = f"{run.info.artifact_uri}/adapter"
    return str(client.create_model_version(ADAPTERS, source=source, run_id=run.info.run_id).version)


def test_an_llm_candidate_takes_the_named_or_the_newest_adapter_version(
    store: MlflowStore, client: MlflowClient, prompt: RegisteredPrompt
) -> None:
    llm = CandidateRequest("llm", None, "bm25", 3, 10, 32)
    with pytest.raises(CandidateError, match=f"no registered version of {ADAPTERS}: materialize"):
        _sides(client, prompt, llm, "bundles-llm")
    first, second = _adapter_version(store, client), _adapter_version(store, client)

    newest = _sides(client, prompt, llm, "bundles-llm")
    assert newest.candidate.adapter_uri == f"models:/{ADAPTERS}/{second}"
    assert newest.model_uri == f"models:/{ADAPTERS}/{second}"
    assert newest.candidate.retrieval_mode == "bm25"
    assert newest.baseline.adapter_uri is None  # the base model, same retrieval settings
    named = _sides(client, prompt, CandidateRequest("llm", first, "bm25", 3, 10, 32), "b-llm")
    assert named.candidate.adapter_uri == f"models:/{ADAPTERS}/{first}"
    base = _sides(client, prompt, CandidateRequest("llm", "base", "bm25", 3, 10, 32), "b-llm")
    assert base.candidate == base.baseline
    with pytest.raises(CandidateError, match="model_version '99': no such version of adapters"):
        _sides(client, prompt, CandidateRequest("llm", "99", "bm25", 3, 10, 32), "b-llm")


def test_an_alias_without_an_index_is_refused_naming_what_to_materialize(
    client: MlflowClient, prompt: RegisteredPrompt
) -> None:
    with pytest.raises(CandidateError) as refused:
        _sides(client, prompt, REQUEST, "bundles-no-index", index_name=None)
    assert str(refused.value) == "alias chunks has no index: materialize search_index"
