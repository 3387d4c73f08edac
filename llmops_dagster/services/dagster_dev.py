"""Running ``dagster dev`` (and ``dagster-daemon``) so that Ctrl-C and SIGTERM really stop it.

A process started in the background by a non-interactive shell inherits SIGINT as *ignored*,
and ``dagster dev`` then ignores Ctrl-C/SIGTERM and leaves its children hanging. We start it in
its own process group with default signal handling restored, and forward our signals to it.
The daemon alone (a deployment's run queue, schedules and sensors) is started the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from llmops_dagster.config import PROJECT_ROOT, child_env


def _restore_default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def dagster_env(dagster_home: Path) -> dict[str, str]:
    dagster_home.mkdir(parents=True, exist_ok=True)
    return child_env(DAGSTER_HOME=str(dagster_home))


def run_dagster_dev(
    dagster_home: Path, *, host: str = "127.0.0.1", port: int = 3000, grace_s: float = 30.0
) -> int:
    """Run ``dagster dev -w workspace.yaml`` until it exits or we are told to stop."""
    dagster = Path(sys.executable).with_name("dagster")
    command = [
        str(dagster) if dagster.exists() else "dagster",
        "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", host, "-p", str(port),
    ]  # fmt: skip
    child = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=dagster_env(dagster_home),
        preexec_fn=_restore_default_signals,
        start_new_session=True,
    )

    def forward(signum: int, _frame: object) -> None:
        # dagster dev shuts its webserver and daemon down cleanly on SIGINT.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        return child.wait()
    except KeyboardInterrupt:
        forward(signal.SIGINT, None)
        try:
            return child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            return child.wait()
    finally:
        if child.poll() is None:
            try:
                child.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


def _cli(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else name


def start_dagster_daemon(
    dagster_home: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    log: Path | None = None,
    workspace: Path | None = None,
) -> subprocess.Popen:
    """``dagster-daemon run -w workspace.yaml`` in its own process group (default signals), so
    that :func:`stop_dagster_daemon` stops it and its code server. ``extra_env`` reaches the
    code location and every run worker the daemon launches (settings, storage credentials)."""
    env = {**dagster_env(dagster_home), **(extra_env or {})}
    workspace_file = workspace or PROJECT_ROOT / "workspace.yaml"
    output = log.open("w") if log is not None else None
    try:
        return subprocess.Popen(
            [_cli("dagster-daemon"), "run", "-w", str(workspace_file)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            preexec_fn=_restore_default_signals,
            start_new_session=True,
        )
    finally:
        if output is not None:
            output.close()  # the child holds its own descriptor


def stop_dagster_daemon(proc: subprocess.Popen, *, grace_s: float = 30.0) -> int:
    """SIGINT to the daemon's process group (it stops its daemons and code server and exits);
    SIGKILL only when it has not exited after ``grace_s``. Returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()
