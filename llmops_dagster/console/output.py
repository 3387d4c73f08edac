"""Output routing: while the demo runs, everything but the live view goes to a log file.

Process-wide, for the duration of one ``with`` block: the root logger and the libraries' own
``StreamHandler``s, ``warnings``, ``sys.stdout``/``sys.stderr`` and (optionally) the process's
descriptors 1 and 2 all point at ``<dagster_home>/logs/demo-<time>-<run>.log``; the console
that draws the live view keeps a descriptor on the real terminal. Everything is put back when
the block ends, also when it raises.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

LOG_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"


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
