"""The demo's console: one live row per step, and everything else in a log file.

The console shows one live row per step of the asset graph (pending → running →
done/warned/failed); everything else (Dagster's full DEBUG event log, library loggers,
``warnings``, whatever the libraries print to stdout/stderr) goes to
``<dagster_home>/logs/demo-<time>-<run>.log``. Split by job: the live view
(:mod:`.progress`), process-wide output routing (:mod:`.output`), running a job with both
(:mod:`.runner`), the summary after the run (:mod:`.summary`).
"""

from llmops_dagster.console.output import LOG_FORMAT, RoutedOutput, demo_log_path, route_output
from llmops_dagster.console.progress import (
    CHECK_FAILED,
    CHECK_PASSED,
    CHECK_WARNED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    WARNED,
    DemoProgress,
    StepRow,
    check_outcome,
    shorten,
)
from llmops_dagster.console.runner import DEMO_LOGGER_KEY, demo_logger, run_job_with_console
from llmops_dagster.console.summary import summary_table

__all__ = [
    "CHECK_FAILED",
    "CHECK_PASSED",
    "CHECK_WARNED",
    "DEMO_LOGGER_KEY",
    "DONE",
    "FAILED",
    "LOG_FORMAT",
    "PENDING",
    "RUNNING",
    "SKIPPED",
    "WARNED",
    "DemoProgress",
    "RoutedOutput",
    "StepRow",
    "check_outcome",
    "demo_log_path",
    "demo_logger",
    "route_output",
    "run_job_with_console",
    "shorten",
    "summary_table",
]
