"""Evaluation: golden sets, DeepEval metrics (retrieval, deterministic, judge), gates, promotion.

Pure library code (no Dagster): the assets, checks and sensors in ``assets/`` and ``jobs/`` call
these modules. Import the submodules directly (``llmops_dagster.evaluate.metrics`` …); this
package ``__init__`` stays light because DeepEval and torch take seconds to import.

Why the environment default below: DeepEval writes its cache and last-run files into
``$DEEPEVAL_CACHE_FOLDER`` (default ``./.deepeval`` — the working directory, often the repository
root). It reads the variable once, when ``deepeval.constants`` is first imported, so it has to be
set before any DeepEval import; pointing it under ``LLMOPS_HOME`` keeps those files with the
project's other local state. A value the user exported wins.
"""

from __future__ import annotations

import os

from llmops_dagster.config import get_settings

os.environ.setdefault("DEEPEVAL_CACHE_FOLDER", str(get_settings().llmops_home / "deepeval"))
