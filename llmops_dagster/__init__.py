"""llmops-dagster: a Dagster code location for the whole LLMOps loop."""

from llmops_dagster.config import apply_offline_env_defaults

# Before anything imports huggingface_hub, deepeval, dlt or mlflow: they read these at import.
apply_offline_env_defaults()

__version__ = "0.1.0"
