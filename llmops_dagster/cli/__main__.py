"""``python -m llmops_dagster.cli``: the same entry point as the ``llmops-dagster`` script."""

from llmops_dagster.cli import main

main()
