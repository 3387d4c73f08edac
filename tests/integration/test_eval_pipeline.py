"""DeepEval evaluate() on hand-made cases, the judge path through DeepEval, MLflow logging."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import pytest
from deepeval.models import DeepEvalBaseLLM
from mlflow import MlflowClient

from llmops_dagster.access import Principal
from llmops_dagster.config import Settings
from llmops_dagster.embed.model import load_embedder
from llmops_dagster.evaluate.compare import compare_runs
from llmops_dagster.evaluate.gate import GateConfig, evaluate_gate
from llmops_dagster.evaluate.golden import GoldenSet, load_golden
from llmops_dagster.evaluate.judge import SchemaJudge
from llmops_dagster.evaluate.metrics import default_metrics
from llmops_dagster.evaluate.run import EvalCase, build_cases, evaluate_rag
from llmops_dagster.evaluate.tracking import TABLE_ARTIFACT, log_evaluation
from llmops_dagster.evaluate.triggers import read_table_artifact
from llmops_dagster.qa import QAItem
from llmops_dagster.tracking.mlflow_store import ensure_mlflow
from llmops_dagster.tracking.runs import open_run

pytestmark = pytest.mark.integration

CASES = [
    EvalCase(
        case_id="q02",
        question="Within how many days must an expense claim be submitted?",
        actual_output="Expense claims must be submitted within 30 days.",
        expected_output=(
            "Expense claims must be submitted within 30 days of the date the cost was incurred."
        ),
        retrieval_context=["Submit claims within 30 days of incurring the cost."],
        retrieved_doc_ids=[
            "fs:handbook/expenses.md",
            "fs:handbook/expenses.md",
            "fs:handbook/leave.md",
        ],
        relevant_doc_ids=["fs:handbook/expenses.md"],
        latency_ms=120.0,
    ),
    EvalCase(
        case_id="q03",
        question="Who has to approve an expense claim of £1,200?",
        actual_output="Your line manager.",
        expected_output=(
            "A claim between £500.01 and £2,000 is approved by your department director."
        ),
        retrieval_context=["Claims up to £500 are approved by the line manager."],
        retrieved_doc_ids=["fs:handbook/leave.md", "fs:handbook/expenses.md"],
        relevant_doc_ids=["fs:handbook/expenses.md"],
        latency_ms=300.0,
    ),
    EvalCase(
        case_id="q01",
        question="In which year was Northwind Drones founded?",
        actual_output="2019",
        expected_output="2019",
        retrieval_context=["Founded in 2019 in a barn outside Harrogate."],
        retrieved_doc_ids=["fs:handbook/remote-work.md"],
        relevant_doc_ids=["fs:handbook/welcome.md"],
        latency_ms=90.0,
    ),
]


def _metrics():
    """The default metric set with the configured embedding model (the library has no default
    model: the models resource passes its embedder)."""
    return default_metrics(encoder=load_embedder(Settings().models.embedding_model))


def test_deepeval_evaluate_with_retrieval_and_deterministic_metrics() -> None:
    result = evaluate_rag(CASES, metrics=_metrics(), engine="deepeval")
    assert result.engine == "deepeval" and result.judge is None and result.judge_stats is None
    assert result.errors == dict.fromkeys(result.metric_keys, 0)
    rows = {r["case_id"]: r for r in result.rows}
    assert rows["q02"]["recall_at_5"] == 1.0 and rows["q02"]["mrr_at_10"] == 1.0
    assert rows["q03"]["mrr_at_10"] == 0.5 and rows["q01"]["recall_at_5"] == 0.0
    assert rows["q01"]["exact_match"] == 1.0 and rows["q03"]["exact_match"] == 0.0
    assert rows["q02"]["token_f1"] > rows["q03"]["token_f1"]
    assert 0.0 <= rows["q03"]["embedding_similarity"] <= 1.0
    assert result.aggregates["recall_at_5"] == pytest.approx(2 / 3)
    assert result.aggregates["mrr_at_10"] == pytest.approx(0.5)
    assert result.aggregates["latency_ms_p95"] == 300.0
    # the direct engine measures the very same metrics
    direct = evaluate_rag(CASES, metrics=_metrics(), engine="direct")
    for key in result.metric_keys:
        assert direct.aggregates[key] == pytest.approx(result.aggregates[key]), key


class CannedJudge(DeepEvalBaseLLM):
    """A fast stand-in judge: every schema gets a fixed, valid instance (score 12 on 0–10 to
    check that G-Eval sees what the judge returns and clamping is the judge's job)."""

    def __init__(self) -> None:
        self.schemas: list[str] = []
        super().__init__(model="canned")

    def load_model(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def get_model_name(self, *args: Any, **kwargs: Any) -> str:
        return "canned-judge"

    def generate(self, prompt: Any, schema: Any = None, **kwargs: Any) -> Any:
        self.schemas.append(schema.__name__)
        values = {
            "statements": ["The claim deadline is 30 days."],
            "truths": ["Claims are due in 30 days."],
            "claims": ["Claims are due in 30 days."],
            "verdicts": [{"verdict": "yes", "reason": "supported"}],
            "steps": ["Compare facts."],
            "reason": "consistent",
            "score": 8,
        }
        return schema.model_validate({k: v for k, v in values.items() if k in schema.model_fields})

    async def a_generate(self, prompt: Any, schema: Any = None, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return self.generate(prompt, schema)


def test_judge_metrics_run_through_deepeval_and_gate_only_when_capable() -> None:
    judge = CannedJudge()
    result = evaluate_rag(
        CASES, metrics=_metrics(), judge=judge, judge_max_cases=2, judge_capable=False
    )
    assert (
        result.judge == "canned-judge" and result.judge_gates is False and result.judge_cases == 2
    )
    assert result.judge_metric_keys == ["answer_relevancy", "faithfulness", "geval_correctness"]
    assert {"Statements", "Truths", "Claims", "Verdicts", "ReasonScore"} <= set(judge.schemas)
    rows = {r["case_id"]: r for r in result.rows}
    assert rows["q02"]["faithfulness"] == 1.0 and rows["q02"]["answer_relevancy"] == 1.0
    assert rows["q02"]["geval_correctness"] == pytest.approx(0.8)
    assert rows["q01"]["faithfulness"] is None  # outside the judged sample: not measured
    assert rows["q01"]["faithfulness_error"] is None and rows["q02"]["faithfulness_error"] is None
    assert result.errors["faithfulness"] == 0
    assert result.judge_stats is None  # a plain DeepEvalBaseLLM keeps no count
    assert any("not capable" in note for note in result.notes)

    config = GateConfig(minimums={"recall_at_5": 0.5, "faithfulness": 1.1})
    assert evaluate_gate(result.aggregates, config).passed  # judge not capable: advisory
    capable = GateConfig(minimums=config.minimums, judge_capable=True)
    gate = evaluate_gate(result.aggregates, capable)
    assert not gate.passed and gate.failures[0].metric == "faithfulness"


def test_build_cases_batches_answer_calls() -> None:
    class Chunk:
        def __init__(self, doc_id: str) -> None:
            self.chunk_id, self.doc_id, self.text = f"c-{doc_id}", doc_id, f"text of {doc_id}"

    class Ans:
        def __init__(self, question: str) -> None:
            self.text, self.total_ms = f"answer to {question}", 5.0
            self.retrieved = [Chunk("fs:handbook/expenses.md")]
            # The ranking kept for metrics goes deeper than the prompt's chunks.
            self.ranked_doc_ids = ["fs:handbook/expenses.md", "fs:handbook/leave.md"]

    calls: list[tuple[int, list[str]]] = []

    def answer_fn(questions: Any, principal: Principal) -> list[Ans]:
        calls.append((len(questions), principal.visible_groups))
        return [Ans(q) for q in questions]

    golden = load_golden().subset(7)
    cases = build_cases(golden, answer_fn, batch_size=3)
    assert calls == [(3, ["public"]), (3, ["public"]), (1, ["public"])]
    assert [c.case_id for c in cases] == [i.id for i in golden.items]
    assert cases[0].retrieved_chunk_ids == ["c-fs:handbook/expenses.md"]
    assert cases[0].retrieved_doc_ids == ["fs:handbook/expenses.md", "fs:handbook/leave.md"]
    assert cases[0].retrieval_context == ["text of fs:handbook/expenses.md"]
    assert cases[0].expected_output == golden.items[0].reference_answer


def test_beir_style_cases_skip_answer_metrics() -> None:
    golden = GoldenSet.from_items(
        [
            QAItem(
                "b1",
                "q?",
                relevant_doc_ids=("beir:d1",),
                type="beir",
                relevance_grades={"beir:d1": 2},
            )
        ],
        name="mini-beir",
    )
    case = EvalCase("b1", "q?", "a", None, ["t"], ["beir:d1"], ["beir:d1"], {"beir:d1": 2})
    result = evaluate_rag([case], metrics=_metrics(), engine="direct")
    assert (
        result.metric_keys == ["recall_at_5", "mrr_at_10", "ndcg_at_10"]
        and golden.format == "qa_jsonl"
    )
    assert result.aggregates["ndcg_at_10"] == 1.0 and "skipped" in result.notes[0]


def _handmade_golden() -> GoldenSet:
    """CASES as the golden set an evaluation run logs as its input."""
    return GoldenSet.from_items(
        [
            QAItem(
                c.case_id,
                c.question,
                relevant_doc_ids=tuple(c.relevant_doc_ids),
                reference_answer=c.expected_output,
            )
            for c in CASES
        ],
        name="handmade",
    )


def test_log_evaluation_run_with_table_input_and_params(tmp_settings: Settings) -> None:
    golden = _handmade_golden()
    result = evaluate_rag(CASES, metrics=_metrics(), engine="direct")
    config = GateConfig(minimums={"recall_at_5": 0.9})
    gate = evaluate_gate(result.aggregates, config)
    store = ensure_mlflow(tmp_settings.mlflow_uri, "evaluations")
    with open_run(store, run_name="evaluate", tags={}, ui_url="http://127.0.0.1:5000") as run:
        run_id = log_evaluation(
            run,
            result,
            golden,
            gate_config=config,
            gate_result=gate,
            context={
                "model_name": "rag-generator",
                "model_version": "3",
                "prompt_version": "v1",
                "index_alias": "llmops-chunks",
            },
        )
    client = MlflowClient(tracking_uri=tmp_settings.mlflow_uri)
    run = client.get_run(run_id)
    assert run.data.metrics["recall_at_5"] == pytest.approx(2 / 3)
    assert run.data.metrics["gate_passed"] == 0.0
    assert run.data.metrics["gate_shortfall.recall_at_5"] == pytest.approx(0.9 - 2 / 3)
    assert run.data.params["model_version"] == "3" and run.data.params["judge"] == "none"
    assert run.data.params["gate.min.recall_at_5"] == "0.9"
    assert run.data.tags["llmops.golden_sha256"] == golden.version
    (dataset_input,) = run.inputs.dataset_inputs
    assert (
        dataset_input.dataset.name == "handmade"
        and dataset_input.dataset.digest == golden.version[:32]
    )
    # MlflowClient.load_table searches runs through the fluent API (the global tracking URI).
    mlflow.set_tracking_uri(tmp_settings.mlflow_uri)
    table = client.load_table(run.info.experiment_id, TABLE_ARTIFACT, run_ids=[run_id])
    assert sorted(table["case_id"]) == ["q01", "q02", "q03"]
    assert run.info.status == "FINISHED"
    gate_file = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="evaluation/gate.json", tracking_uri=tmp_settings.mlflow_uri
    )
    gate_json = json.loads(Path(gate_file).read_text())
    assert gate_json["passed"] is False


class ScriptedTextJudge(SchemaJudge):
    """A stub for a judge model (no model runs): fixed raw JSON text per schema, parsed and
    counted by the project's own judge code. Case q03's answer yields an empty claim list."""

    TEXT: ClassVar[dict[str, str]] = {
        "Statements": '{"statements": ["Claims are due in 30 days."]}',
        "Verdicts": '{"verdicts": [{"verdict": "yes", "reason": "supported"}]}',
        "Truths": '{"truths": ["Claims are due in 30 days."]}',
        "Claims": '{"claims": ["Claims are due in 30 days."]}',
        "ReasonScore": '{"reason": "consistent", "score": 7',  # cut off: repaired
    }

    def __init__(self) -> None:
        super().__init__(model="scripted")

    def load_model(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def _complete(self, prompt: str, schema: Any) -> str:
        if schema.__name__ == "Claims" and "Your line manager." in prompt:
            return '{"claims": []}'
        return self.TEXT[schema.__name__]


def test_judge_counts_and_errors_reach_mlflow_and_read_back(tmp_settings: Settings) -> None:
    """The per-case table MLflow keeps is what ``champion_regression`` compares with later: read
    back, a case outside the judge sample is NaN (not measured, left out) and an errored case
    is 0.0 with its error text (kept, counted)."""
    judge = ScriptedTextJudge()
    result = evaluate_rag(
        CASES,
        metrics=_metrics(),
        judge=judge,
        judge_max_cases=2,
        judge_capable=True,
        engine="direct",
    )
    rows = {r["case_id"]: r for r in result.rows}
    assert rows["q03"]["faithfulness"] == 0.0
    assert "empty 'claims' list" in rows["q03"]["faithfulness_error"]
    assert rows["q02"]["faithfulness"] == 1.0 and rows["q01"]["faithfulness"] is None
    assert result.errors["faithfulness"] == 1 and result.errors["answer_relevancy"] == 0
    # q02: relevancy 2 + faithfulness 3 + G-Eval 1; q03: 2 + 2 + 1. Every G-Eval reply repaired.
    assert result.judge_stats == {"calls": 11, "repaired": 2, "failed": 1}

    golden = _handmade_golden()
    store = ensure_mlflow(tmp_settings.mlflow_uri, "evaluations")
    with open_run(store, run_name="evaluate", tags={}, ui_url="http://127.0.0.1:5000") as run:
        run_id = log_evaluation(run, result, golden)
    metrics = MlflowClient(tracking_uri=tmp_settings.mlflow_uri).get_run(run_id).data.metrics
    assert metrics["judge.calls"] == 11.0 and metrics["judge.repaired_calls"] == 2.0
    assert metrics["judge.failed_calls"] == 1.0
    assert metrics["faithfulness_errors"] == 1.0 and metrics["recall_at_5_errors"] == 0.0

    table = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=TABLE_ARTIFACT, tracking_uri=tmp_settings.mlflow_uri
    )
    recorded = read_table_artifact(Path(table))
    faith, recall = compare_runs(result.rows, recorded, ["faithfulness", "recall_at_5"])
    assert (faith.n, faith.candidate_errors, faith.baseline_errors) == (2, 1, 1)
    assert faith.diff == 0.0 and (recall.n, recall.baseline_errors) == (3, 0)
