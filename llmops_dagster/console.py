"""The demo's console: one live row per step, and everything else in a log file.

The console shows one live row per step of the asset graph (pending → running → done/failed);
everything else (Dagster's full DEBUG event log, library loggers, ``warnings``, whatever the
libraries print to stdout/stderr) goes to ``<dagster_home>/logs/demo-<time>-<run>.log``.
Dagster events reach the console through a job-scoped custom logger (``@dg.logger``) that is
added to the definitions and switched on in the run config, which also switches Dagster's
default colored console logger off.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import dagster as dg

DEMO_LOGGER_KEY = "llmops_demo_console"
LOG_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"

PENDING, RUNNING, DONE, FAILED, SKIPPED = "pending", "running", "done", "failed", "skipped"
_STATE_STYLE = {
    PENDING: ("·", "dim"),
    DONE: ("✓", "green"),
    FAILED: ("✗", "bold red"),
    SKIPPED: ("–", "dim"),
}


def shorten(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else "…" + text[-59:]


# --- progress: Dagster events → one live row per step -------------------------------------------


@dataclass
class StepRow:
    """One step of the run (an asset, a multi-asset or an asset check) as the console shows it."""

    key: str
    state: str = PENDING
    started: float | None = None
    ended: float | None = None
    details: list[str] = field(default_factory=list)
    last_message: str = ""


def _event_of(record: logging.LogRecord) -> Any:
    """The ``DagsterEvent`` a Dagster log record carries, if any (``record.dagster_meta``)."""
    meta = getattr(record, "dagster_meta", None)
    if isinstance(meta, dict) and meta.get("dagster_event") is not None:
        return meta["dagster_event"]
    return getattr(record, "dagster_event", None)


def _event_type(event: Any) -> str:
    value = getattr(event, "event_type_value", None) or getattr(event, "event_type", "")
    return str(getattr(value, "value", value))


def _error_text(error: Any) -> str:
    """The innermost message of a ``SerializableErrorInfo`` chain: the user's exception."""
    message = ""
    while error is not None:
        message = (getattr(error, "message", "") or message).strip()
        error = getattr(error, "cause", None)
    return message.splitlines()[0] if message else "error"


def _fmt_seconds(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class DemoProgress(logging.Handler):
    """A ``logging.Handler`` fed by Dagster's log stream, rendered by rich as one row per step.

    Dagster hands every log record of the run to the loggers of the run config; the records of
    Dagster events carry the ``DagsterEvent`` in ``record.dagster_meta["dagster_event"]``.
    ``STEP_START``/``STEP_SUCCESS``/``STEP_FAILURE``/``STEP_SKIPPED`` move a row through
    pending → running → done/failed/skipped; ``ASSET_MATERIALIZATION`` and
    ``ASSET_CHECK_EVALUATION`` add a detail to the step's row. ``on_event`` takes any object with
    ``event_type_value`` and ``step_key`` (so tests can feed synthetic events).
    """

    def __init__(
        self, step_keys: Iterable[str] = (), *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(level=logging.DEBUG)
        self.clock = clock
        self.rows: dict[str, StepRow] = {key: StepRow(key) for key in step_keys}
        self.run_state = PENDING
        self._spinner = Spinner("dots", style="yellow")

    # -- input ----------------------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = _event_of(record)
            if event is not None:
                self.on_event(event)
                return
            # A plain ``context.log`` message from a step: the running row shows the latest one.
            meta = getattr(record, "dagster_meta", None) or {}
            step_key = meta.get("step_key")
            row = self.rows.get(step_key) if step_key else None
            if row is not None and row.state == RUNNING and record.levelno >= logging.INFO:
                message = str(meta.get("orig_message") or record.getMessage())
                row.last_message = message.strip().splitlines()[0] if message.strip() else ""
        except Exception:
            self.handleError(record)

    def on_event(self, event: Any) -> None:
        """Apply one Dagster event (a ``DagsterEvent`` or an object shaped like one)."""
        kind = _event_type(event)
        if kind in ("PIPELINE_START", "RUN_START"):
            self.run_state = RUNNING
            return
        if kind in ("PIPELINE_SUCCESS", "RUN_SUCCESS"):
            self.run_state = DONE
            return
        if kind in ("PIPELINE_FAILURE", "RUN_FAILURE"):
            self.run_state = FAILED
            return
        step_key = getattr(event, "step_key", None)
        if not step_key:
            return
        with self.lock:
            row = self.rows.setdefault(step_key, StepRow(step_key))
            now = self.clock()
            data = getattr(event, "event_specific_data", None)
            if kind in ("STEP_START", "STEP_RESTARTED"):
                row.state, row.started, row.ended = RUNNING, now, None
            elif kind == "STEP_SUCCESS":
                row.state, row.ended = DONE, now
                row.last_message = ""
            elif kind == "STEP_FAILURE":
                row.state, row.ended = FAILED, now
                row.last_message = ""
                row.details.append(shorten(_error_text(getattr(data, "error", None))))
            elif kind == "STEP_SKIPPED":
                row.state, row.ended = SKIPPED, now
            elif kind == "STEP_UP_FOR_RETRY":
                row.details.append("retrying")
            elif kind == "ASSET_MATERIALIZATION":
                asset_key = getattr(event, "asset_key", None)
                name = asset_key.to_user_string() if asset_key is not None else "asset"
                if name != step_key:
                    row.details.append(f"materialized {name}")
            elif kind == "ASSET_CHECK_EVALUATION":
                name = getattr(data, "check_name", None) or "check"
                passed = bool(getattr(data, "passed", False))
                row.details.append(f"{name} {'passed' if passed else 'FAILED'}")

    def add_steps(self, step_keys: Iterable[str]) -> None:
        """Rows for steps not seen yet, as pending (in the given order, after existing rows)."""
        with self.lock:
            for key in step_keys:
                self.rows.setdefault(key, StepRow(key))

    def finish(self) -> None:
        """The run is over: steps that never started were skipped (an upstream step failed)."""
        with self.lock:
            now = self.clock()
            for row in self.rows.values():
                if row.state == PENDING:
                    row.state = SKIPPED
                    row.details.append("not run (upstream failed)")
                elif row.state == RUNNING:
                    row.state, row.ended = FAILED, now
                    row.details.append("interrupted")

    # -- output ---------------------------------------------------------------------------------

    def state(self, step_key: str) -> str:
        return self.rows[step_key].state

    def counts(self) -> dict[str, int]:
        with self.lock:
            counts = dict.fromkeys((PENDING, RUNNING, DONE, FAILED, SKIPPED), 0)
            for row in self.rows.values():
                counts[row.state] += 1
            return counts

    def elapsed(self, row: StepRow) -> str:
        if row.started is None:
            return ""
        end = row.ended if row.ended is not None else self.clock()
        return _fmt_seconds(end - row.started)

    def __rich__(self) -> Table:
        with self.lock:
            counts = self.counts()
            table = Table(
                box=None,
                show_header=False,
                pad_edge=False,
                title_justify="left",
                title=f"asset graph: {counts[DONE]}/{len(self.rows)} done"
                + (f", {counts[FAILED]} failed" if counts[FAILED] else ""),
            )
            table.add_column(width=1, no_wrap=True)
            table.add_column("step", no_wrap=True)
            table.add_column("state", no_wrap=True)
            table.add_column("time", justify="right", no_wrap=True)
            table.add_column("detail", overflow="ellipsis", no_wrap=True)
            for row in self.rows.values():
                if row.state == RUNNING:
                    icon: Any = self._spinner
                    style = "yellow"
                else:
                    symbol, style = _STATE_STYLE[row.state]
                    icon = Text(symbol, style=style)
                detail = "; ".join(row.details)
                if row.state == RUNNING and row.last_message:
                    detail = shorten(row.last_message)
                table.add_row(
                    icon,
                    Text(row.key, style="bold" if row.state == RUNNING else ""),
                    Text(row.state, style=style),
                    self.elapsed(row),
                    Text(detail, style="red" if row.state == FAILED else "dim"),
                )
            return table


# --- the log file: Dagster's full log plus everything the libraries say --------------------------


def demo_log_path(home: Path, run_id: str, *, now: datetime | None = None) -> Path:
    """``<dagster_home>/logs/demo-<YYYYmmdd-HHMMSS>-<run id prefix>.log``."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(home) / "logs" / f"demo-{stamp}-{run_id[:8]}.log"


@dataclass
class RoutedOutput:
    """What ``route_output`` hands the run: the log file's handler and the terminal's console."""

    log_path: Path
    handler: logging.Handler
    console: Console


def _std_fd(stream: Any) -> int | None:
    """1 or 2 when ``stream`` writes to the process's stdout/stderr descriptor, else ``None``."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return fd if fd in (1, 2) else None


def _all_loggers() -> list[logging.Logger]:
    named = [
        logger
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]
    return [logging.getLogger(), *named]


def _retarget_stream_handlers(old: Iterable[Any], new: TextIO) -> list[tuple[Any, Any]]:
    """Point every logging ``StreamHandler`` writing to one of ``old`` at ``new``.

    Libraries such as transformers and mlflow attach their own ``StreamHandler(sys.stderr)`` and
    stop propagation; the handler holds the stream object, so ``redirect_stderr`` misses it.
    Returns ``(handler, previous stream)`` pairs to undo it.
    """
    targets = [stream for stream in old if stream is not None]
    swapped: list[tuple[Any, Any]] = []
    for logger in _all_loggers():
        for handler in list(logger.handlers):
            if not isinstance(handler, logging.StreamHandler) or isinstance(
                handler, logging.FileHandler
            ):
                continue
            stream = getattr(handler, "stream", None)
            if not any(stream is target for target in targets):
                continue
            with contextlib.suppress(AttributeError):  # a read-only ``stream`` property
                _set_stream(handler, new)
                swapped.append((handler, stream))
    return swapped


def _set_stream(handler: logging.StreamHandler, stream: Any) -> None:
    """``handler.setStream(stream)``, also when the handler's current stream is closed: a
    handler created while an earlier run was routed can hold a stream closed since, and
    ``setStream`` flushes the old stream first (``ValueError: I/O operation on closed file``)."""
    try:
        handler.setStream(stream)
    except ValueError:
        handler.acquire()
        try:
            handler.stream = stream
        finally:
            handler.release()


def _terminal_console(console: Console, redirected: tuple[Any, ...]) -> tuple[Console, Any]:
    """A console that still reaches the terminal after stdout/stderr point at the log file.

    A console with its own file (a test's ``StringIO``) is kept. One that writes to
    ``sys.stdout``/``sys.stderr`` gets a twin on a duplicate of the original descriptor, made
    before the descriptors are redirected. Returns the console and the stream to close after.
    """
    target = console.file
    if not any(target is stream for stream in redirected):
        return console, None
    fd = _std_fd(target)
    if fd is None:
        stream: Any = target  # not descriptor-backed: the object itself is not redirected
        owned = None
    else:
        target.flush()
        stream = owned = os.fdopen(
            os.dup(fd), "w", buffering=1, encoding=getattr(target, "encoding", None) or "utf-8"
        )
    twin = Console(
        file=stream,
        force_terminal=console.is_terminal,
        color_system=console.color_system,  # type: ignore[arg-type]
        width=console.width,
        height=console.height,
    )
    return twin, owned


@contextlib.contextmanager
def route_output(log_path: Path, console: Console, *, fds: bool = True) -> Iterator[RoutedOutput]:
    """Send everything but the progress view to ``log_path`` for the duration of the block.

    - the returned ``handler`` writes to the file (give it to the Dagster logger);
    - the root logger gets that handler too, ``warnings`` are captured into logging
      (``logging.captureWarnings``), and library ``StreamHandler``s on stdout/stderr are
      pointed at the file;
    - ``sys.stdout``/``sys.stderr`` are redirected (``contextlib.redirect_stdout/stderr``): rich
      consoles and ``print`` in DeepEval & co land in the file;
    - with ``fds`` the process's descriptors 1 and 2 are redirected too, for output from C
      extensions, subprocesses and objects that kept the original ``sys.stderr``.

    ``RoutedOutput.console`` is where to draw the live view: ``console`` itself, or a twin made
    before redirecting when ``console`` writes to stdout/stderr.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    std_streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    # Three handles on one file, all appending: one for logging, one each for stdout and
    # stderr, so Dagster's compute-log capture (which swaps the descriptor under sys.stdout and
    # sys.stderr while a step runs) never catches the log records.
    log_stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    out_stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    err_stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    ours = (log_stream, out_stream, err_stream)
    handler = logging.StreamHandler(log_stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    live_console, owned_terminal = _terminal_console(console, (sys.stdout, sys.stderr))

    root = logging.getLogger()
    warnings_were_captured = getattr(logging, "_warnings_showwarning", None) is not None
    saved_fds: list[tuple[int, int]] = []
    swapped: list[tuple[Any, Any]] = []
    with contextlib.ExitStack() as stack:
        try:
            swapped = _retarget_stream_handlers(std_streams, err_stream)
            root.addHandler(handler)
            logging.captureWarnings(True)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(AttributeError, ValueError, OSError):
                    stream.flush()
            if fds:
                for fd, target in ((1, out_stream), (2, err_stream)):
                    try:
                        saved = os.dup(fd)
                    except OSError:
                        continue
                    os.dup2(target.fileno(), fd)
                    saved_fds.append((fd, saved))
            stack.enter_context(contextlib.redirect_stdout(out_stream))
            stack.enter_context(contextlib.redirect_stderr(err_stream))
            yield RoutedOutput(log_path=log_path, handler=handler, console=live_console)
        finally:
            stack.close()  # sys.stdout/sys.stderr back first
            for stream in ours:
                with contextlib.suppress(ValueError, OSError):
                    stream.flush()
            for fd, saved in reversed(saved_fds):
                os.dup2(saved, fd)
                os.close(saved)
            if not warnings_were_captured:
                logging.captureWarnings(False)
            root.removeHandler(handler)
            for swapped_handler, stream in swapped:
                # Never hand a closed stream back: the next write would raise.
                previous = sys.__stderr__ if getattr(stream, "closed", False) else stream
                with contextlib.suppress(AttributeError):
                    _set_stream(swapped_handler, previous)
            # Handlers created during the run (a library imported inside an asset) may hold one
            # of our streams: point them at the real stderr before the file closes.
            _retarget_stream_handlers(ours, sys.stderr)
            handler.close()
            for stream in ours:
                stream.close()
            if owned_terminal is not None:
                with contextlib.suppress(OSError, ValueError):
                    owned_terminal.flush()
                    owned_terminal.close()


# --- running a job with the console ---------------------------------------------------------------


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


# --- the demo ------------------------------------------------------------------------------------
