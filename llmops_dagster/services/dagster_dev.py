"""Running ``dagster dev`` so that Ctrl-C and SIGTERM really stop it.

A process started in the background by a non-interactive shell inherits SIGINT as *ignored*,
and ``dagster dev`` then ignores Ctrl-C/SIGTERM and leaves its children hanging. We start it in
its own process group with default signal handling restored, and forward our signals to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from llmops_dagster.config import PROJECT_ROOT


def _restore_default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def dagster_env(dagster_home: Path) -> dict[str, str]:
    dagster_home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "DAGSTER_HOME": str(dagster_home)}


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
