"""The live view: Dagster events → one row per step (pending → running → done/warned/failed).

A step's own outcome and its checks' outcomes are shown apart: a check that did not pass with
severity ``WARN`` (the champion comparison when a candidate does not beat the champion, as
designed) makes its row *warned* (yellow ``!``), not *failed*; only a step that failed, or an
``ERROR`` check that did not pass, makes a row *failed* (red ``✗``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

PENDING, RUNNING, DONE, WARNED, FAILED, SKIPPED = (
    "pending",
    "running",
    "done",
    "warned",
    "failed",
    "skipped",
)
STATES = (PENDING, RUNNING, DONE, WARNED, FAILED, SKIPPED)
_STATE_STYLE = {
    PENDING: ("·", "dim"),
    DONE: ("✓", "green"),
    WARNED: ("!", "bold yellow"),
    FAILED: ("✗", "bold red"),
    SKIPPED: ("–", "dim"),
}

#: A check's outcome as the console and the demo summary name it.
CHECK_PASSED, CHECK_WARNED, CHECK_FAILED = "passed", "warned", "failed"
CHECK_STYLE = {CHECK_PASSED: "green", CHECK_WARNED: "yellow", CHECK_FAILED: "red"}


def check_outcome(passed: bool, severity: Any) -> str:
    """``passed``, ``warned`` (did not pass, severity ``WARN``) or ``failed`` (did not pass,
    severity ``ERROR``, Dagster's default). ``severity``: an ``AssetCheckSeverity`` or its
    value."""
    if passed:
        return CHECK_PASSED
    return CHECK_WARNED if str(getattr(severity, "value", severity)) == "WARN" else CHECK_FAILED


def shorten(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else "…" + text[-59:]


@dataclass
class StepRow:
    """One step of the run (an asset, a multi-asset or an asset check) as the console shows it."""

    key: str
    state: str = PENDING
    started: float | None = None
    ended: float | None = None
    details: list[str] = field(default_factory=list)
    last_message: str = ""
    #: The outcomes of the checks this step evaluated (``check_outcome`` values).
    checks: list[str] = field(default_factory=list)

    def settle(self) -> None:
        """A finished step's row: done, or warned/failed by its worst check."""
        if self.state not in (DONE, WARNED):
            return
        if CHECK_FAILED in self.checks:
            self.state = FAILED
        elif CHECK_WARNED in self.checks:
            self.state = WARNED


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
    ``ASSET_CHECK_EVALUATION`` add a detail to the step's row, and a check that did not pass
    makes a finished row warned or failed (:func:`check_outcome`). ``on_event`` takes any
    object with ``event_type_value`` and ``step_key`` (so tests can feed synthetic events).
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
                row.settle()
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
                outcome = check_outcome(
                    bool(getattr(data, "passed", False)), getattr(data, "severity", "ERROR")
                )
                row.checks.append(outcome)
                row.details.append(f"{name} {outcome}")
                row.settle()  # an evaluation reported after the step's success

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
            counts = dict.fromkeys(STATES, 0)
            for row in self.rows.values():
                counts[row.state] += 1
            return counts

    def title(self) -> str:
        """``asset graph: 11/12 done, 1 warned``: a warned step finished (it counts as done)."""
        counts = self.counts()
        finished = counts[DONE] + counts[WARNED]
        return (
            f"asset graph: {finished}/{len(self.rows)} done"
            + (f", {counts[WARNED]} warned" if counts[WARNED] else "")
            + (f", {counts[FAILED]} failed" if counts[FAILED] else "")
        )

    def elapsed(self, row: StepRow) -> str:
        if row.started is None:
            return ""
        end = row.ended if row.ended is not None else self.clock()
        return _fmt_seconds(end - row.started)

    def __rich__(self) -> Table:
        with self.lock:
            table = Table(
                box=None,
                show_header=False,
                pad_edge=False,
                title_justify="left",
                title=self.title(),
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
                detail_style = {FAILED: "red", WARNED: "yellow"}.get(row.state, "dim")
                table.add_row(
                    icon,
                    Text(row.key, style="bold" if row.state == RUNNING else ""),
                    Text(row.state, style=style),
                    self.elapsed(row),
                    Text(detail, style=detail_style),
                )
            return table
