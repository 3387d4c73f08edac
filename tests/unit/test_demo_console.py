"""The demo's console: live step rows from Dagster events, everything else in the log file."""

import io
import logging
import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest
from rich.console import Console

from llmops_dagster.console import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    WARNED,
    DemoProgress,
    demo_log_path,
    route_output,
    run_job_with_console,
    summary_table,
)

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def event(kind: str, step_key: str | None = None, **fields: Any) -> Any:
    return SimpleNamespace(event_type_value=kind, step_key=step_key, **fields)


def record(ev: Any = None, *, step_key: str | None = None, msg: str = "", level: int = 10) -> Any:
    """A log record as Dagster's log manager hands it to the loggers of the run config."""
    meta = {"dagster_event": ev, "step_key": step_key, "orig_message": msg}
    return logging.makeLogRecord(
        {
            "msg": msg,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "dagster_meta": meta,
        }
    )


def render(progress: DemoProgress) -> str:
    out = Console(file=io.StringIO(), width=120, color_system=None)
    out.print(progress)
    return out.file.getvalue()  # type: ignore[attr-defined]


def line_of(text: str, step_key: str) -> str:
    return next(line for line in text.splitlines() if f" {step_key} " in f" {line} ")


def test_rows_move_pending_running_done_from_records() -> None:
    clock = Clock()
    progress = DemoProgress(["documents", "chunks", "embeddings"], clock=clock)
    assert [progress.state(k) for k in progress.rows] == [PENDING, PENDING, PENDING]

    progress.handle(record(event("STEP_START", "chunks")))
    assert progress.state("chunks") == RUNNING
    assert progress.state("documents") == PENDING

    progress.handle(record(step_key="chunks", msg="chunked 12 documents", level=logging.INFO))
    clock.now += 2.5
    text = render(progress)
    assert "running" in line_of(text, "chunks")
    assert "2.5s" in line_of(text, "chunks")
    assert "chunked 12 documents" in line_of(text, "chunks")

    progress.handle(record(event("STEP_SUCCESS", "chunks")))
    assert progress.state("chunks") == DONE
    assert "done" in line_of(render(progress), "chunks")
    assert "1/3 done" in render(progress)


def test_failure_row_shows_failed_and_the_user_error() -> None:
    progress = DemoProgress(["embeddings", "search_index"], clock=Clock())
    progress.on_event(event("STEP_START", "embeddings"))
    error = SimpleNamespace(
        message="DagsterExecutionStepExecutionError: Error occurred while executing op",
        cause=SimpleNamespace(message="ValueError: model not found\n", cause=None),
    )
    progress.on_event(
        event("STEP_FAILURE", "embeddings", event_specific_data=SimpleNamespace(error=error))
    )
    assert progress.state("embeddings") == FAILED
    line = line_of(render(progress), "embeddings")
    assert "failed" in line
    assert "ValueError: model not found" in line

    progress.finish()  # the downstream step never started
    assert progress.state("search_index") == SKIPPED
    assert "skipped" in line_of(render(progress), "search_index")


def test_real_dagster_events_are_understood() -> None:
    from dagster._core.events import DagsterEvent, StepFailureData
    from dagster._utils.error import SerializableErrorInfo

    progress = DemoProgress(["a", "a_ok"], clock=Clock())
    progress.on_event(DagsterEvent(event_type_value="STEP_START", job_name="j", step_key="a"))
    assert progress.state("a") == RUNNING
    progress.on_event(
        DagsterEvent(
            event_type_value="STEP_FAILURE",
            job_name="j",
            step_key="a",
            event_specific_data=StepFailureData(
                error=SerializableErrorInfo("boom", [], "ValueError"), user_failure_data=None
            ),
        )
    )
    assert progress.state("a") == FAILED
    assert progress.rows["a"].details == ["boom"]
    check = dg.AssetCheckEvaluation(asset_key=dg.AssetKey("a"), check_name="ok", passed=False)
    progress.on_event(
        DagsterEvent(
            event_type_value="ASSET_CHECK_EVALUATION",
            job_name="j",
            step_key="a_ok",
            event_specific_data=check,
        )
    )
    assert progress.rows["a_ok"].details == ["ok failed"]  # severity ERROR (the default)


def _check(name: str, passed: bool, severity: str) -> Any:
    return SimpleNamespace(check_name=name, passed=passed, severity=severity)


def test_a_warn_check_that_did_not_pass_shows_warned_and_an_error_check_failed() -> None:
    progress = DemoProgress(["comparison", "gate", "holds"], clock=Clock())
    for key, check in (
        ("comparison", _check("champion_comparison", False, "WARN")),
        ("gate", _check("quality_gate", False, "ERROR")),
        ("holds", _check("champion_holds_up", True, "ERROR")),
    ):
        progress.on_event(event("STEP_START", key))
        progress.on_event(event("ASSET_CHECK_EVALUATION", key, event_specific_data=check))
        progress.on_event(event("STEP_SUCCESS", key))
    assert {key: progress.state(key) for key in progress.rows} == {
        "comparison": WARNED,
        "gate": FAILED,
        "holds": DONE,
    }
    assert progress.rows["comparison"].details == ["champion_comparison warned"]
    assert progress.rows["gate"].details == ["quality_gate failed"]
    assert progress.rows["holds"].details == ["champion_holds_up passed"]
    text = render(progress)
    assert "asset graph: 2/3 done, 1 warned, 1 failed" in text
    line = line_of(text, "comparison")
    assert line.split()[:3] == ["!", "comparison", "warned"]
    assert "failed" not in line


def test_a_check_reported_after_its_step_succeeded_still_marks_the_row() -> None:
    progress = DemoProgress(["comparison"], clock=Clock())
    progress.on_event(event("STEP_START", "comparison"))
    progress.on_event(event("STEP_SUCCESS", "comparison"))
    assert progress.state("comparison") == DONE
    check = _check("champion_comparison", False, "WARN")
    progress.on_event(event("ASSET_CHECK_EVALUATION", "comparison", event_specific_data=check))
    assert progress.state("comparison") == WARNED


def test_real_run_shows_a_warn_check_as_warned_in_the_view_and_the_summary(
    tmp_path: Path,
) -> None:
    """The demo's case: ``champion_comparison`` (severity WARN) did not pass because the
    candidate did not beat the champion, as designed; the blocking gate passed."""

    @dg.asset
    def scored() -> int:
        return 1

    @dg.asset_check(asset=scored)
    def comparison() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)

    @dg.asset_check(asset=scored, blocking=True)
    def gate() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.ERROR)

    screen = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        result, progress = run_job_with_console(
            dg.Definitions(assets=[scored], asset_checks=[comparison, gate]),
            instance=instance,
            console=Console(file=screen, width=120, color_system=None),
            log_path=tmp_path / "demo.log",
        )
    assert result.success
    states = {key: progress.state(key) for key in progress.rows}
    assert states == {"scored": DONE, "scored_comparison": WARNED, "scored_gate": DONE}
    assert "asset graph: 3/3 done, 1 warned" in screen.getvalue()

    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(summary_table(result, {}))
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in
            out.getvalue().splitlines() if line.count("│") == 3}  # fmt: skip
    assert rows == {
        "scored": "ok",
        "check scored:comparison": "warned",
        "check scored:gate": "passed",
    }


def test_events_for_unknown_steps_add_rows_and_run_events_are_not_rows() -> None:
    progress = DemoProgress(clock=Clock())
    progress.on_event(event("PIPELINE_START"))
    progress.on_event(event("STEP_START", "ingest_fs"))
    progress.on_event(event("ASSET_MATERIALIZATION", "ingest_fs", asset_key=None))
    assert list(progress.rows) == ["ingest_fs"]
    assert progress.run_state == RUNNING


def test_demo_log_path_is_under_dagster_home(tmp_path: Path) -> None:
    from datetime import datetime

    path = demo_log_path(tmp_path, "0123456789abcdef", now=datetime(2025, 1, 2, 3, 4, 5))
    assert path == tmp_path / "logs" / "demo-20250102-030405-01234567.log"


def test_library_output_goes_to_the_file_not_the_console(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # A library with its own stderr handler and no propagation (transformers, mlflow do this).
    lib = logging.getLogger("fake_transformers")
    lib_handler = logging.StreamHandler(sys.stderr)
    lib.addHandler(lib_handler)
    lib.propagate = False
    try:
        screen = io.StringIO()
        console = Console(file=screen, width=100)
        log_path = tmp_path / "logs" / "demo.log"
        with route_output(log_path, console) as routed:
            assert routed.console is console
            logging.getLogger("deepeval").warning("deepeval says hi")
            lib.warning("transformers says hi")
            warnings.warn("a library warning", UserWarning, stacklevel=1)
            print("printed by a library")
            Console().print("rich output from deepeval")
            print("stderr from a library", file=sys.stderr)
            os.write(2, b"C-level stderr\n")
            routed.handler.handle(record(msg="dagster debug line"))
            routed.console.print("progress row")
        assert lib_handler.stream is sys.stderr  # restored
    finally:
        lib.removeHandler(lib_handler)
        lib.propagate = True

    lines = (
        "deepeval says hi",
        "transformers says hi",
        "a library warning",
        "printed by a library",
        "rich output from deepeval",
        "stderr from a library",
        "C-level stderr",
        "dagster debug line",
    )
    logged = log_path.read_text()
    captured = capfd.readouterr()
    for line in lines:
        assert line in logged
        assert line not in screen.getvalue()
        assert line not in captured.out + captured.err
    assert "DEBUG" in logged
    assert screen.getvalue().strip() == "progress row"
    assert "progress row" not in logged
    # Back to normal afterwards.
    print("after the run")
    assert "after the run" in capfd.readouterr().out
    assert "after the run" not in log_path.read_text()


def test_a_handler_left_on_a_closed_stream_does_not_break_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo routes output twice (the graph, then the extractive evaluation). A library
    handler made during the first run can hold a stream closed since; retargeting it used to
    flush that stream and raise ``ValueError: I/O operation on closed file``."""
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    lib = logging.getLogger("fake_left_over")
    handler = logging.StreamHandler(closed)
    lib.addHandler(handler)
    lib.propagate = False
    log_path = tmp_path / "demo.log"
    try:
        with route_output(log_path, Console(file=io.StringIO()), fds=False):
            lib.warning("a record from the second run")
        assert handler.stream is sys.__stderr__  # never handed back closed
    finally:
        lib.removeHandler(handler)
        lib.propagate = True
    assert "a record from the second run" in log_path.read_text()


def test_real_run_of_two_assets(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    @dg.asset
    def upstream(context: dg.AssetExecutionContext) -> int:
        context.log.info("upstream computing")
        print("noise printed by upstream")
        logging.getLogger("some_library").warning("noise logged by a library")
        return 1

    @dg.asset
    def downstream(upstream: int) -> int:
        return upstream + 1

    screen = io.StringIO()
    log_path = tmp_path / "logs" / "demo-test.log"
    with dg.DagsterInstance.ephemeral() as instance:
        result, progress = run_job_with_console(
            dg.Definitions(assets=[upstream, downstream]),
            instance=instance,
            console=Console(file=screen, width=100),
            log_path=log_path,
        )
    assert result.success
    assert list(progress.rows) == ["upstream", "downstream"]
    assert {key: progress.state(key) for key in progress.rows} == {
        "upstream": DONE,
        "downstream": DONE,
    }
    logged = log_path.read_text()
    assert " DEBUG " in logged
    assert "STEP_START" in logged and "STEP_SUCCESS" in logged
    assert "upstream computing" in logged
    assert "noise printed by upstream" in logged
    assert "noise logged by a library" in logged
    assert result.run_id in logged
    shown = screen.getvalue()
    assert "STEP_START" not in shown
    assert "noise" not in shown
    assert "2/2 done" in shown
    captured = capfd.readouterr()
    assert "STEP_START" not in captured.out + captured.err
    assert "noise" not in captured.out + captured.err


def test_the_demo_prints_each_comparison_and_its_decision() -> None:
    """What the demo shows after an evaluation: both bundles, the paired table, the decision."""
    from types import SimpleNamespace

    from llmops_dagster.demo import print_decision

    table = (
        "| metric | n | candidate_mean | baseline_mean | diff | ci_low | ci_high |\n"
        "|---|---|---|---|---|---|---|\n"
        "| token_f1 | 60 | 0.31 | 0.29 | 0.02 | -0.01 | 0.05 |"
    )
    metadata = {
        "bundle_uri": dg.MetadataValue.text("models:/llmops-rag-bundle/1"),
        "baseline": dg.MetadataValue.text("base model (no champion yet)"),
        "cases": dg.MetadataValue.int(60),
        "comparison": dg.MetadataValue.md(table),
        "decision": dg.MetadataValue.text("challenger"),
        "decision_summary": dg.MetadataValue.text("challenger (vs base model): primary ..."),
    }
    event = SimpleNamespace(
        asset_key=dg.AssetKey("rag_evaluation"),
        materialization=SimpleNamespace(metadata=metadata),
    )
    result = SimpleNamespace(get_asset_materialization_events=lambda: [event])
    out = io.StringIO()
    print_decision(Console(file=out, width=120), "LoRA adapter", result)
    text = out.getvalue()
    assert "LoRA adapter models:/llmops-rag-bundle/1 vs base model (no champion yet)" in text
    assert "on 60 golden questions" in text
    assert "token_f1" in text and "-0.01" in text and "0.05" in text
    assert "decision: challenger — challenger (vs base model): primary ..." in text

    empty = io.StringIO()
    none = SimpleNamespace(get_asset_materialization_events=lambda: [])
    print_decision(Console(file=empty, width=120), "extractive answerer", none)
    assert "extractive answerer: no evaluation (see the log)" in empty.getvalue()


def test_the_demo_evaluates_the_adapter_again_unless_it_already_faced_the_extractive() -> None:
    """An adapter promoted by the first evaluation and kept by the extractive one, or one first
    evaluated against an extractive champion that still holds, has been compared with the
    extractive answerer; every other outcome asks for the adapter against today's champion."""
    from llmops_dagster.demo import adapter_faced_extractive

    outcomes = {
        (adapter, extractive): adapter_faced_extractive(adapter, extractive)
        for adapter in ("champion", "challenger", "rejected", None)
        for extractive in ("champion", "rejected")
    }
    assert [pair for pair, faced in outcomes.items() if faced] == [("champion", "rejected")]
    # The adapter's own evaluation was against an extractive champion that still holds.
    assert adapter_faced_extractive(
        "challenger", "challenger", adapter_baseline="2", champion="2", champion_is_extractive=True
    )
    assert not adapter_faced_extractive(  # that champion has been replaced since
        "challenger", "champion", adapter_baseline="2", champion="6", champion_is_extractive=True
    )
    assert not adapter_faced_extractive(  # the baseline was an LLM bundle
        "challenger", "challenger", adapter_baseline="2", champion="2"
    )
