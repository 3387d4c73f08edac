"""Answer reuse: the key over every input the answers depend on, the code digest of the answer
path, recording a side's answers in an MLflow run and finding them again (a real SQLite store
in tmp), the candidate evaluation scoring recorded answers instead of answering — and the
evaluation's threads, a models-resource setting read by the config package."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

import llmops_dagster
from llmops_dagster.evaluate.answer_key import (
    ANSWER_LIBRARIES,
    ANSWER_PATH,
    AnswerInputs,
    answer_key,
    code_digest,
    library_versions,
)
from llmops_dagster.evaluate.answer_reuse import (
    AnswerReuse,
    AnswerStore,
    RecordedAnswer,
    SideAnswers,
    answer_golden,
    answers_artifact,
    key_tag,
    record_side_answers,
    source_tag,
)
from llmops_dagster.evaluate.candidate import Sides, evaluate_candidate, record_evaluation
from llmops_dagster.evaluate.metrics import TokenF1
from llmops_dagster.models.spec import GeneratorPin
from llmops_dagster.rag.bundle import RagBundle
from llmops_dagster.rag.prompt_registry import RegisteredPrompt, sync_prompt
from llmops_dagster.rag.prompts import load_prompt
from llmops_dagster.tracking.mlflow_store import MlflowStore, ensure_mlflow
from llmops_dagster.tracking.runs import open_run
from tests.support.stubs import rag_bundle
from tests.support.tracking import sqlite_store
from tests.unit.test_eval_candidate import CASES, GOLDEN, POLICY, REFERENCE, AnswersAlike

pytestmark = pytest.mark.unit

BUNDLE = rag_bundle()
INPUTS = AnswerInputs(
    golden_digest=GOLDEN.version,
    index_name=BUNDLE.index_name,
    index_version="sha256:" + "1" * 64,
    code_digest="sha256:" + "2" * 64,
)
#: The physical index's chunk texts by id: what ``es_chunk_texts`` reads from Elasticsearch
#: (a service; the integration test reads the real index), here a dict.
INDEX = {"c1": REFERENCE}


def index_texts(chunk_ids: Sequence[str]) -> Mapping[str, str]:
    return {chunk_id: INDEX[chunk_id] for chunk_id in chunk_ids if chunk_id in INDEX}


# --- the key ----------------------------------------------------------------------------------
KEY_INPUTS = {
    "bundle_key": BUNDLE.key(),
    "golden_digest": GOLDEN.version,
    "index_name": "llmops-chunks-v1",
    "index_version": "sha256:" + "1" * 64,
    "code_digest": "sha256:" + "2" * 64,
}


def test_the_same_inputs_give_the_same_key() -> None:
    key = answer_key(**KEY_INPUTS)
    assert key == answer_key(**dict(reversed(list(KEY_INPUTS.items()))))
    assert len(key) == 64 and int(key, 16) >= 0
    assert INPUTS.key(BUNDLE) == key == INPUTS.key(rag_bundle())


@pytest.mark.parametrize("changed", sorted(KEY_INPUTS))
def test_each_input_changes_the_key(changed: str) -> None:
    assert answer_key(**{**KEY_INPUTS, changed: "other"}) != answer_key(**KEY_INPUTS)


@pytest.mark.parametrize(
    "setting",
    [
        {"adapter_uri": "models:/adapters/2"},
        {"prompt_version": "fedcba987654"},
        {"retrieval_k": 5},
        {"max_new_tokens": 64},
        {"embedding_model_id": "other-model"},
    ],
)
def test_every_bundle_setting_changes_the_key(setting: dict[str, Any]) -> None:
    llm = GeneratorPin("local", "smol", "sha256:" + "3" * 64, 0.0, 1.1)
    assert INPUTS.key(rag_bundle(llm, **setting)) != INPUTS.key(rag_bundle(llm))


def test_a_bundle_on_another_index_is_not_keyed_with_this_evaluations_inputs() -> None:
    with pytest.raises(ValueError, match="bundle answers on other-v2, the evaluation on"):
        INPUTS.key(rag_bundle(index_name="other-v2"))


def _copy_answer_path(target: Path) -> Path:
    """The installed package's answer-path files under ``target`` (a package-like folder)."""
    package = Path(llmops_dagster.__file__).resolve().parent
    for relative in ANSWER_PATH:
        source = package / relative
        if source.is_dir():
            shutil.copytree(source, target / relative, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / relative)
    return target


def test_the_code_digest_changes_when_a_file_of_the_answer_path_changes(tmp_path: Path) -> None:
    copy = _copy_answer_path(tmp_path / "llmops_dagster")
    installed = code_digest()
    assert installed.startswith("sha256:") and code_digest(copy) == installed  # not the place
    (copy / "rag" / "__pycache__").mkdir(exist_ok=True)
    (copy / "rag" / "__pycache__" / "pipeline.cpython-311.pyc").write_bytes(b"compiled")
    (copy / "serving").mkdir()
    (copy / "serving" / "app.py").write_text("# serving only: not the answer path\n")
    assert code_digest(copy) == installed

    retriever = copy / "search" / "retriever.py"
    retriever.write_text(retriever.read_text() + "\n# one comment\n")
    assert code_digest(copy) != installed
    retriever.write_text(retriever.read_text().removesuffix("\n# one comment\n"))
    assert code_digest(copy) == installed
    (copy / "models" / "new_backend.py").write_text("")  # a new file on the path
    assert code_digest(copy) != installed


def test_the_code_digest_changes_with_a_library_on_the_answer_path() -> None:
    installed = library_versions()
    assert sorted(installed) == sorted(ANSWER_LIBRARIES)
    assert installed["transformers"] != "absent" and installed["torch"] != "absent"
    assert code_digest(libraries=installed) == code_digest()
    upgraded = {**installed, "transformers": "99.0.0"}
    assert code_digest(libraries=upgraded) != code_digest()


def test_a_missing_answer_path_entry_is_an_error_not_a_smaller_digest(tmp_path: Path) -> None:
    copy = _copy_answer_path(tmp_path / "llmops_dagster")
    (copy / "access.py").unlink()
    with pytest.raises(ValueError, match=r"answer path 'access\.py' is not in ") as refused:
        code_digest(copy)
    assert str(refused.value).endswith(": update ANSWER_PATH")


# --- recorded in MLflow, found again ----------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> MlflowStore:
    return ensure_mlflow(sqlite_store(tmp_path / "mlflow" / "mlflow.db"), "answers")


@pytest.fixture
def client(store: MlflowStore) -> MlflowClient:
    return MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)


def _answers() -> tuple[RecordedAnswer, ...]:
    return tuple(answer_golden(AnswersAlike(f"answer of {BUNDLE.key()}"), GOLDEN, batch_size=7))


def _record(store: MlflowStore, answers: SideAnswers, side: str = "baseline") -> str:
    with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
        record_side_answers(run, side, BUNDLE, answers, INPUTS, logged=set())
    return run.run_id


def _reuse(store: MlflowStore, client: MlflowClient, inputs: AnswerInputs = INPUTS) -> AnswerReuse:
    return AnswerReuse(inputs, AnswerStore(client, store.experiment_id, index_texts))


def test_recorded_answers_are_found_by_key_and_read_back_whole(
    store: MlflowStore, client: MlflowClient
) -> None:
    answers = _answers()
    assert [a.case_id for a in answers] == [f"q{i}" for i in range(CASES)]
    key = INPUTS.key(BUNDLE)
    run_id = _record(store, SideAnswers(key, answers, generated=CASES, reused=0))
    run = client.get_run(run_id)
    assert run.data.tags[key_tag("baseline")] == key
    assert run.data.tags[source_tag("baseline")] == run_id
    assert run.data.metrics["answers.baseline.generated"] == CASES
    artifacts = [f.path for f in client.list_artifacts(run_id, "answers")]
    assert artifacts == [answers_artifact(key)]

    found = _reuse(store, client).find(BUNDLE, GOLDEN)
    assert found is not None and (found.key, found.run_id) == (key, run_id)
    assert found.answers == answers  # texts, chunk ids and texts, rankings, latencies, scores


@pytest.mark.parametrize(
    "changed",
    [
        {"index_version": "sha256:" + "9" * 64},
        {"code_digest": "sha256:" + "9" * 64},
        {"index_name": "llmops-chunks-v2"},
    ],
)
def test_answers_are_never_found_across_another_index_version_index_or_code(
    store: MlflowStore, client: MlflowClient, changed: dict[str, str]
) -> None:
    _record(store, SideAnswers(INPUTS.key(BUNDLE), _answers(), CASES, 0))
    inputs = replace(INPUTS, **changed)
    bundle = replace(BUNDLE, index_name=inputs.index_name)
    assert _reuse(store, client, inputs).find(bundle, GOLDEN) is None
    assert _reuse(store, client).find(BUNDLE, GOLDEN) is not None  # the control


def test_answers_are_never_found_for_another_golden_set_or_bundle(
    store: MlflowStore, client: MlflowClient
) -> None:
    _record(store, SideAnswers(INPUTS.key(BUNDLE), _answers(), CASES, 0))
    other_golden = GOLDEN.subset(CASES - 1)
    inputs = replace(INPUTS, golden_digest=other_golden.version)
    assert _reuse(store, client, inputs).find(BUNDLE, other_golden) is None
    assert _reuse(store, client).find(replace(BUNDLE, retrieval_k=4), GOLDEN) is None
    with pytest.raises(ValueError, match="not the one the answer inputs were made for"):
        _reuse(store, client).find(BUNDLE, other_golden)


def test_a_run_that_reused_answers_points_at_the_run_that_holds_them(
    store: MlflowStore, client: MlflowClient
) -> None:
    key = INPUTS.key(BUNDLE)
    first = _record(store, SideAnswers(key, _answers(), CASES, 0))
    found = _reuse(store, client).find(BUNDLE, GOLDEN)
    assert found is not None
    second = _record(store, SideAnswers(key, found.answers, 0, CASES, found.run_id), "candidate")
    assert client.list_artifacts(second, "answers") == []  # nothing copied
    assert client.get_run(second).data.tags[source_tag("candidate")] == first
    assert client.get_run(second).data.metrics["answers.candidate.reused"] == CASES
    assert _reuse(store, client).store.source_runs(key) == [first]


def test_a_recorded_set_whose_chunks_left_the_index_is_not_reused(
    store: MlflowStore, client: MlflowClient
) -> None:
    run_id = _record(store, SideAnswers(INPUTS.key(BUNDLE), _answers(), CASES, 0))
    messages: list[str] = []
    reuse = AnswerReuse(INPUTS, AnswerStore(client, store.experiment_id, lambda ids: {}))
    assert reuse.find(BUNDLE, GOLDEN, log=messages.append) is None
    assert messages == [
        f"recorded answers {INPUTS.key(BUNDLE)[:12]} of run {run_id} not reused: "
        "1 chunks not in the index (first: c1)"
    ]


def test_reuse_switched_off_finds_nothing(store: MlflowStore, client: MlflowClient) -> None:
    _record(store, SideAnswers(INPUTS.key(BUNDLE), _answers(), CASES, 0))
    assert replace(_reuse(store, client), enabled=False).find(BUNDLE, GOLDEN) is None


# --- the candidate evaluation scores recorded answers ----------------------------------------
LLM = GeneratorPin("openai", "some-model")
EXTRACTIVE = GeneratorPin("builtin", "extractive:v1")


@pytest.fixture
def prompt(client: MlflowClient) -> RegisteredPrompt:
    return sync_prompt(client, load_prompt(), name="p-reuse")


def _sides(prompt: RegisteredPrompt, candidate: GeneratorPin = EXTRACTIVE) -> Sides:
    def bundle(pin: GeneratorPin) -> RagBundle:
        return rag_bundle(pin, prompt_uri=prompt.uri, prompt_version=prompt.content_hash)

    return Sides(bundle(candidate), bundle(LLM), "base model (no champion yet)", None)


def _evaluate_and_record(
    store: MlflowStore, client: MlflowClient, sides: Sides, reuse: AnswerReuse
) -> tuple[Any, dict[str, AnswersAlike], str]:
    pipelines = {"extractive": AnswersAlike(REFERENCE), "llm": AnswersAlike("no idea")}
    evaluation = evaluate_candidate(
        sides,
        GOLDEN,
        pipeline_for=lambda bundle, tags: pipelines[bundle.generator],  # type: ignore[arg-type]
        metrics=[TokenF1()],
        policy=POLICY,
        n_resamples=200,
        reuse=reuse,
    )
    with open_run(store, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
        record_evaluation(
            run, client, evaluation, prompt_uri=sides.candidate.prompt_uri, bundle_model="b"
        )
    return evaluation, pipelines, run.run_id


def _counts(evaluation: Any) -> dict[str, tuple[int, int, str | None]]:
    return {
        side: (found.generated, found.reused, found.source_run_id)
        for side, found in evaluation.side_answers().items()
    }


def test_a_second_evaluation_scores_both_sides_recorded_answers_without_answering(
    store: MlflowStore, client: MlflowClient, prompt: RegisteredPrompt
) -> None:
    sides = _sides(prompt)
    first, asked, first_run = _evaluate_and_record(store, client, sides, _reuse(store, client))
    assert _counts(first) == {"candidate": (CASES, 0, None), "baseline": (CASES, 0, None)}
    assert len(asked["extractive"].questions) == len(asked["llm"].questions) == CASES

    second, asked, _ = _evaluate_and_record(store, client, sides, _reuse(store, client))
    assert asked["extractive"].questions == asked["llm"].questions == []  # nothing answered
    assert _counts(second) == {
        "candidate": (0, CASES, first_run),
        "baseline": (0, CASES, first_run),
    }
    # Scores are recomputed from the same answers: the same numbers.
    assert second.candidate.result.rows == first.candidate.result.rows
    assert second.baseline.result.aggregates == first.baseline.result.aggregates
    assert second.decision.outcome == first.decision.outcome == "champion"


def test_with_reuse_switched_off_both_sides_answer_and_are_recorded_again(
    store: MlflowStore, client: MlflowClient, prompt: RegisteredPrompt
) -> None:
    sides = _sides(prompt)
    _evaluate_and_record(store, client, sides, _reuse(store, client))
    off = replace(_reuse(store, client), enabled=False)
    again, asked, run_id = _evaluate_and_record(store, client, sides, off)
    assert _counts(again) == {"candidate": (CASES, 0, None), "baseline": (CASES, 0, None)}
    assert len(asked["extractive"].questions) == len(asked["llm"].questions) == CASES
    assert client.get_run(run_id).data.tags[source_tag("baseline")] == run_id


def test_the_same_bundle_on_both_sides_is_answered_once(
    store: MlflowStore, client: MlflowClient, prompt: RegisteredPrompt
) -> None:
    sides = _sides(prompt, candidate=LLM)  # the base model against the base model
    assert sides.candidate == sides.baseline
    evaluation, asked, run_id = _evaluate_and_record(store, client, sides, _reuse(store, client))
    assert len(asked["llm"].questions) == CASES  # once, not twice
    assert _counts(evaluation) == {"candidate": (CASES, 0, None), "baseline": (0, CASES, None)}
    tags = client.get_run(run_id).data.tags
    assert tags[source_tag("candidate")] == tags[source_tag("baseline")] == run_id
    assert [f.path for f in client.list_artifacts(run_id, "answers")] == [
        answers_artifact(INPUTS.key(sides.candidate))
    ]


# --- threads of the evaluation ------------------------------------------------------------
def _tiny_model(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(b"\x00\x01weights")
    (root / "tokenizer.json").write_text("{}")
    return root


def test_the_evaluations_pipelines_load_their_generator_with_eval_torch_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asset's pipeline factory hands ``build_bundle_pipeline`` the evaluation's models,
    and those load a pinned generator with ``eval_torch_threads`` (serving: ``torch_threads``).
    Nothing is loaded: the factory and the loader are replaced by recorders."""
    import assets.evaluate as asset_module
    import llmops_dagster.models as models_package
    from llmops_dagster.config import Settings
    from llmops_dagster.resources import build_resources

    settings = Settings().override(
        home=tmp_path,
        models={"generator_model": str(_tiny_model(tmp_path / "tiny")), "generator_gguf_file": None,
                "torch_threads": 1, "eval_torch_threads": 3},
    )  # fmt: skip
    resources = build_resources(settings, with_dlt=False)
    models = resources["models"]
    handed: list[Any] = []
    monkeypatch.setattr(
        asset_module, "build_bundle_pipeline", lambda es, m, *a, **k: handed.append(m)
    )
    build = asset_module.evaluation_pipeline_for(
        resources["elasticsearch"], models, resources["mlflow"]
    )
    build(BUNDLE, {})
    (evaluation_models,) = handed

    loaded: list[Any] = []
    monkeypatch.setattr(models_package, "load_generator", lambda spec, **k: loaded.append(spec))
    pin = models.generator_pin()
    evaluation_models.pinned_generator(pin)
    models.pinned_generator(pin)  # what serving loads
    assert [spec.local.threads for spec in loaded] == [3, 1]


def test_recorded_answers_keep_their_tokens_and_older_records_have_none() -> None:
    """A reused side is compared on cost like a fresh one: the tokens go into the record and
    come back; a record written before tokens were recorded reads as unknown (None), never 0."""
    from types import SimpleNamespace

    from llmops_dagster.evaluate.answer_reuse import RecordedChunk

    chunk = SimpleNamespace(chunk_id="c1", doc_id="d1", text="Returns take 30 days.")
    answer = SimpleNamespace(
        text="30 days [chunk:c1]",
        retrieved=[chunk],
        ranked_doc_ids=["d1"],
        total_ms=12.5,
        prompt_tokens=412,
        completion_tokens=9,
    )
    recorded = RecordedAnswer.from_answer("q1", answer)
    back = RecordedAnswer.from_record(recorded.to_record(), {"c1": chunk.text})
    assert (back.prompt_tokens, back.completion_tokens) == (412, 9)
    assert back == recorded
    old = {key: value for key, value in recorded.to_record().items() if "tokens" not in key}
    before = RecordedAnswer.from_record(old, {"c1": chunk.text})
    assert (before.prompt_tokens, before.completion_tokens) == (None, None)
    assert before.retrieved == (RecordedChunk("c1", "d1", chunk.text),)
