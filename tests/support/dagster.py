"""Dagster in the tests: the asset groups materialized in-process, a ``DAGSTER_HOME``,
``llmops-dagster dev`` as a real process, and the processes a Dagster instance leaves behind."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from llmops_dagster.config import PROJECT_ROOT, Settings
from llmops_dagster.services.dagster_dev import stop_dagster_daemon
from llmops_dagster.sources.source_config import SourcesConfig
from tests.support.ports import free_port
from tests.support.waiting import wait_for_http, wait_until

#: The groups a reindex materializes: the sources' loads, documents → chunks → embeddings, the
#: search index (with its blocking checks).
INDEX_GROUPS = ("ingest", "prepare", "index")
#: The same without the index: the warehouse tables up to the embeddings.
PREPARE_GROUPS = ("ingest", "prepare")
LOCAL_DAGSTER_YAML = PROJECT_ROOT / "dagster_home" / "dagster.yaml"


def materialize_groups(
    settings: Settings,
    sources: SourcesConfig,
    groups: Sequence[str] = INDEX_GROUPS,
    *,
    resources: Mapping[str, Any] | None = None,
    instance: dg.DagsterInstance | None = None,
    run_config: Mapping[str, Any] | None = None,
    must_succeed: bool = True,
) -> dg.ExecuteInProcessResult:
    """The project's assets and checks built from ``settings`` and ``sources``, the ``groups``
    materialized in one in-process run (an ephemeral instance unless one is given). With
    ``must_succeed`` a failing step raises its error here; without it the result is returned
    for the test to inspect."""
    from llmops_dagster.definitions import build_asset_checks, build_assets, build_resources

    result = dg.materialize(
        [*build_assets(settings, sources), *build_asset_checks()],
        selection=dg.AssetSelection.groups(*groups),
        resources=resources if resources is not None else build_resources(settings),
        instance=instance if instance is not None else dg.DagsterInstance.ephemeral(),
        run_config=dict(run_config or {}),
        raise_on_error=must_succeed,
    )
    if must_succeed:
        assert result.success
    return result


def dagster_home(folder: Path, config: Path = LOCAL_DAGSTER_YAML) -> Path:
    """A fresh ``DAGSTER_HOME`` holding a copy of ``config`` (the project's local one unless
    another is named, e.g. deploy/dagster.postgres.yaml)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(config, folder / "dagster.yaml")
    return folder


@dataclass
class DevServer:
    url: str
    port: int
    proc: subprocess.Popen
    info: dict[str, Any]  # what /server_info answered
    log: Path


@contextmanager
def dagster_dev(
    home: Path,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    sigint_ignored: bool = False,
    timeout_s: float = 180,
) -> Iterator[DevServer]:
    """``llmops-dagster dev`` on a free port over ``home``, once it answers; stopped on exit
    (SIGINT to its process group, SIGKILL after a minute) unless the test stopped it.
    ``sigint_ignored``: started the way a script's ``&`` starts it (SIGINT ignored)."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [_cli("llmops-dagster"), "dev", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {}), "DAGSTER_HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_ignore_sigint if sigint_ignored else None,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        answer = wait_for_http(f"{url}/server_info", timeout_s=timeout_s, proc=proc, log=log)
        yield DevServer(url, port, proc, answer.json(), log)
    finally:
        # The CLI forwards SIGINT to `dagster dev`, which stops its webserver and daemon.
        stop_dagster_daemon(proc, grace_s=60)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def processes_with_env(entry: str) -> list[str]:
    """``pid: command line`` of every process but this one whose environment holds ``entry``
    (e.g. ``DAGSTER_HOME=/tmp/...``: a webserver, daemon, code server or run worker)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if entry.encode() in environ and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline.decode(errors='replace')}")
    return found


def wait_until_gone(home: Path, *, within_s: float) -> None:
    """Nothing of the instance at ``home`` is left running within ``within_s`` (code servers
    stop on their own once the process that heartbeats them is gone)."""
    entry = f"DAGSTER_HOME={home}"
    wait_until(
        lambda: not processes_with_env(entry),
        timeout_s=within_s,
        what=f"every process of {home} gone",
        interval_s=1.0,
        detail=lambda: processes_with_env(entry),
    )


def faq_database(path: Path) -> str:
    """A SQLite source database at ``path`` with a ``faq`` table of three rows (ids 1-3, an
    ``updated_at`` cursor); returns its SQLAlchemy URL."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE faq (id INTEGER PRIMARY KEY, title TEXT, body TEXT, updated_at TEXT)")
    con.executemany(
        "INSERT INTO faq VALUES (?, ?, ?, ?)",
        [(i, f"Q{i}", f"answer {i}", f"2026-02-0{i} 00:00:00") for i in range(1, 4)],
    )
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def materialize_in_subprocesses(select: str, env: Mapping[str, str]) -> str:
    """``dagster asset materialize`` of the code location (the multiprocess executor: a process
    per step) with ``env`` on top of this one's; returns its log once the run succeeded."""
    proc = subprocess.run(
        [_cli("dagster"), "asset", "materialize", "-m", "llmops_dagster.definitions",
         "--select", select],
        cwd=PROJECT_ROOT, env={**os.environ, **env}, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "RUN_SUCCESS" in log
    return log


def _cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))
