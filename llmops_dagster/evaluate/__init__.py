"""Evaluation: golden sets, DeepEval metrics (retrieval, deterministic, judge), gates, promotion.

Pure library code (no Dagster): the assets, checks and sensors in ``assets/`` and ``jobs/`` call
these modules. Import the submodules directly (``llmops_dagster.evaluate.metrics`` …); this
package ``__init__`` stays light because DeepEval and torch take seconds to import. DeepEval's
cache folder is set where a process starts (``config.apply_offline_env_defaults``).
"""
