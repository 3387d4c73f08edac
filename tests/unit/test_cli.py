"""The command-line interface as a package: every group registered on ``main``, both entry
points (the console script's ``llmops_dagster.cli:main`` and ``python -m``), options that come
from the library rather than literals."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from llmops_dagster.cli import main
from llmops_dagster.search.retriever import SearchMode

pytestmark = pytest.mark.unit

COMMANDS = {
    "services": ["down", "fetch", "status", "up"],
    "models": ["prepare"],
    "index": ["rollback", "status"],
    "ask": None,
    "serve": None,
    "keys": ["add", "list", "revoke"],
    "bundle": ["approve", "rollback", "status"],
    "lineage": None,
    "feedback": ["accept", "list", "reject"],
    "golden": ["accept", "list", "reject"],
    "dev": None,
    "demo": None,
}


def test_every_command_group_is_on_main() -> None:
    found = {
        name: sorted(command.commands) if isinstance(command, click.Group) else None
        for name, command in main.commands.items()
    }
    assert found == COMMANDS


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llmops_dagster.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line]
    assert sorted(listed) == sorted(COMMANDS)


def test_ask_offers_the_retrievers_search_modes() -> None:
    (mode,) = [p for p in main.commands["ask"].params if p.name == "mode"]
    assert isinstance(mode.type, click.Choice)
    assert list(mode.type.choices) == [m.value for m in SearchMode]
    refused = CliRunner().invoke(main, ["ask", "q", "--mode", "hybrid"])
    assert refused.exit_code == 2
    assert "'hybrid' is not one of 'bm25', 'knn', 'hybrid_rrf'" in refused.output
