"""``llmops-dagster``: local services, the Dagster UI, and the demo.

One module per command group; this one holds the root group ``main`` (the console script
``llmops-dagster = llmops_dagster.cli:main``; ``python -m llmops_dagster.cli`` runs it too).
Commands parse options, call library functions and print; the rules they apply (promotion,
lineage, review) live in the library.
"""

from __future__ import annotations

import click

import llmops_dagster
from llmops_dagster.cli.ask import ask
from llmops_dagster.cli.bundle import bundle
from llmops_dagster.cli.dev import demo, dev
from llmops_dagster.cli.feedback import feedback
from llmops_dagster.cli.golden import golden
from llmops_dagster.cli.index import index
from llmops_dagster.cli.keys import keys
from llmops_dagster.cli.lineage import lineage
from llmops_dagster.cli.models import models
from llmops_dagster.cli.serve import serve
from llmops_dagster.cli.services import services
from llmops_dagster.config import apply_offline_env_defaults


@click.group()
@click.version_option(llmops_dagster.__version__)
def main() -> None:
    """llmops-dagster: a Dagster code location for the whole LLMOps loop."""
    # This process starts here: offline defaults before any library reads them.
    apply_offline_env_defaults()


for command in (
    services,
    models,
    index,
    ask,
    serve,
    keys,
    bundle,
    lineage,
    feedback,
    golden,
    dev,
    demo,
):
    main.add_command(command)

__all__ = ["main"]
