"""Waiting for something with a deadline, and failing with what was last seen.

One loop for every "until the server answers / the trace arrives / the runs finish" in the
tests: a test that times out says what it waited for, the last value or error it saw, and the
tail of the log of the process it depends on (or that the process already exited).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

T = TypeVar("T")


def log_tail(log: Path | None, chars: int = 3000) -> str:
    """The end of a process's log file ("" when there is none yet)."""
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-chars:]


def wait_until(
    check: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.5,
    ignore: tuple[type[BaseException], ...] = (),
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    detail: Callable[[], object] | None = None,
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    ``ignore``: exceptions that mean "not yet" (a connection refused while a server starts).
    ``proc``: the process the condition depends on; if it exits first the wait fails at once.
    On timeout the test fails naming ``what``, the last value or ignored error, ``detail()``
    when given, and the tail of ``log``.
    """
    __tracebackhide__ = True  # a failure points at the test's wait, not at this loop
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            last = check()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        if proc is not None and proc.poll() is not None:
            _fail(f"{what}: the process exited ({proc.returncode})", last, detail, log)
        if time.monotonic() >= deadline:
            _fail(f"{what}: not within {timeout_s:.0f} s", last, detail, log)
        time.sleep(interval_s)


def wait_for_http(
    url: str,
    *,
    timeout_s: float,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> httpx.Response:
    """The first 200 response of ``GET url`` (a server that has finished starting)."""
    __tracebackhide__ = True

    def answered() -> httpx.Response | None:
        response = httpx.get(url, timeout=2)
        return response if response.status_code == 200 else None

    return wait_until(
        answered,
        timeout_s=timeout_s,
        what=f"{url} answering",
        interval_s=1.0,
        ignore=(httpx.HTTPError,),
        proc=proc,
        log=log,
    )


def _fail(
    message: str, last: object, detail: Callable[[], object] | None, log: Path | None
) -> None:
    __tracebackhide__ = True
    parts = [message, f"last seen: {last!r}"]
    if detail is not None:
        parts.append(str(detail()))
    tail = log_tail(log)
    if tail:
        parts.append(f"--- {log} ---\n{tail}")
    pytest.fail("\n".join(parts))
