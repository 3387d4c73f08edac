"""The process environment: the only code of the project that reads or writes ``os.environ``.

Settings read their variables through pydantic-settings (:mod:`.groups` and friends); what is
left here is what a *process* needs: offline defaults set where a process starts, the
environment handed to child processes, and secrets read by the name a setting gives (the CLI
resolves them itself; under Dagster they are ``dg.EnvVar`` references resolved at run time).
``tests/unit/test_environment_reads.py`` fails on any other reader in the package.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

# Environment defaults that keep every entry point offline-safe. They are *defaults*: a user who
# exports another value keeps it. Applied where a process starts (the CLI, the code location,
# the test session), never as a side effect of importing the package.
OFFLINE_ENV_DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "DEEPEVAL_NO_INSPECT_PROMPT": "1",
    "CONFIDENT_OPEN_BROWSER": "0",
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# A server must not wait minutes on a dead tracking server: MLflow's HTTP client retries 7
# times with backoff by default. Defaults only; an exported value wins.
SERVER_ENV_DEFAULTS: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def apply_offline_env_defaults(home: Path | None = None) -> None:
    """Set the offline defaults (and DeepEval's cache folder under ``home``) in this process.

    DeepEval reads ``DEEPEVAL_CACHE_FOLDER`` once, at its first import, and otherwise writes
    ``./.deepeval`` into the working directory: pointing it under the project's home keeps
    those files with the other local state.
    """
    for key, value in OFFLINE_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if home is None:
        from llmops_dagster.config.settings import Settings

        home = Settings().home
    os.environ.setdefault("DEEPEVAL_CACHE_FOLDER", str(home / "deepeval"))


def apply_server_env_defaults() -> None:
    """Fail-fast MLflow HTTP settings for a long-running server process (``serve``): set where
    that process starts, before MLflow is imported."""
    for key, value in SERVER_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def child_env(*, drop: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """The environment for a child process: this process's, without ``drop``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in set(drop)}
    env.update(extra)
    return env


def secret_from_env(name: str | None) -> str | None:
    """The value of the variable ``name`` (a setting names it, e.g. LLMOPS_GENERATOR_API_KEY_ENV),
    or None when no name is given or it is unset/empty. For processes that resolve their own
    secrets (the CLI); Dagster resolves the same names as ``dg.EnvVar`` at run time."""
    if not name:
        return None
    return os.environ.get(name) or None
