"""Running a job with the console: the live view on the terminal, the full log in a file.

Dagster events reach the view through a job-scoped custom logger (``@dg.logger``) that is added
to the definitions and switched on in the run config, which also switches Dagster's default
colored console logger off.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live

from llmops_dagster.console.output import route_output
from llmops_dagster.console.progress import DemoProgress

if TYPE_CHECKING:
    import dagster as dg

#: The key of the demo's logger in the job's logger definitions and in the run config.
DEMO_LOGGER_KEY = "llmops_demo_console"


def demo_logger(*handlers: logging.Handler) -> dg.LoggerDefinition:
    """A job-scoped Dagster logger (``@dg.logger``) that hands every record to ``handlers``.

    Switched on by ``run_config={"loggers": {DEMO_LOGGER_KEY: {}}}``; with a logger configured,
    Dagster does not add its default colored console logger.
    """
    import dagster as dg

    @dg.logger(description="llmops-dagster demo: live progress view and the run's log file")
    def _demo_logger(init_context: Any) -> logging.Logger:  # dg.InitLoggerContext
        # Not registered with logging's manager: no parent, so nothing propagates to root.
        logger = logging.Logger("dagster", level=logging.DEBUG)
        for handler in handlers:
            logger.addHandler(handler)
        return logger

    return _demo_logger


def _step_keys(job: dg.JobDefinition) -> list[str]:
    """The job's steps in execution order (the rows start as pending)."""
    try:
        from dagster._core.execution.api import create_execution_plan

        return list(create_execution_plan(job).step_keys_to_execute)
    except Exception:  # internal API: fall back to the graph's nodes, in definition order
        return [node.name for node in job.graph.nodes]


def run_job_with_console(
    defs: dg.Definitions,
    *,
    instance: dg.DagsterInstance,
    console: Console,
    log_path: Path,
    run_id: str | None = None,
    fds: bool = True,
    job_name: str | None = None,
    run_config: dict[str, Any] | None = None,
) -> tuple[dg.ExecuteInProcessResult, DemoProgress]:
    """Run ``job_name`` (default: all of ``defs``' assets) in-process, with the live step
    view on ``console``.

    The full Dagster log (DEBUG included) and all library output go to ``log_path``.
    """
    import dagster as dg

    run_id = run_id or str(uuid.uuid4())
    progress = DemoProgress()
    with route_output(log_path, console, fds=fds) as routed:
        logger_def = demo_logger(routed.handler, progress)
        merged = dg.Definitions.merge(defs, dg.Definitions(loggers={DEMO_LOGGER_KEY: logger_def}))
        job = (
            merged.resolve_job_def(job_name)
            if job_name
            else merged.resolve_implicit_global_asset_job_def()
        )
        progress.add_steps(_step_keys(job))
        routed.handler.handle(
            logging.makeLogRecord(
                {"name": __name__, "levelno": logging.INFO, "levelname": "INFO",
                 "msg": f"llmops-dagster demo: run {run_id}, job {job.name}"}
            )
        )  # fmt: skip
        with Live(
            progress,
            console=routed.console,
            refresh_per_second=8,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            try:
                result = job.execute_in_process(
                    instance=instance,
                    raise_on_error=False,
                    run_id=run_id,
                    run_config={**(run_config or {}), "loggers": {DEMO_LOGGER_KEY: {}}},
                )
            finally:
                progress.finish()
                live.refresh()
        if not routed.console.is_terminal:
            routed.console.line()  # rich ends the final frame with a newline only on terminals
    return result, progress
