"""llmops-dagster: a Dagster code location for the whole LLMOps loop.

Importing the package changes nothing in the environment: the offline defaults
(``config.apply_offline_env_defaults``) are applied where a process starts — the CLI, the code
location (``definitions``), the test session.
"""

__version__ = "0.1.0"
