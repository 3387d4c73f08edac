"""``llmops-dagster dev`` and ``demo``: the Dagster UI on this code location, and the demo run."""

from __future__ import annotations

import sys

import click

from llmops_dagster.cli.context import get_settings, log


@click.command("dev")
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def dev(port: int, host: str) -> None:
    """Run `dagster dev` on this code location; Ctrl-C / SIGTERM stop it cleanly."""
    from llmops_dagster.services.dagster_dev import run_dagster_dev

    sys.exit(run_dagster_dev(get_settings().dagster_home, host=host, port=port))


@click.command("demo")
@click.option("--keep-services/--stop-services", default=True, show_default=True)
def demo(keep_services: bool) -> None:
    """Start the services and materialize the whole asset graph on the sample corpus."""
    from llmops_dagster.demo import run_demo

    sys.exit(run_demo(get_settings(), keep_services=keep_services, log=log))
