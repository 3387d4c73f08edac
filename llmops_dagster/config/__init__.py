"""Configuration: the one place that reads the environment, grouped by concern.

Everything downstream gets values, never this object: each resource's ``from_settings`` copies
its group into the Dagster resource that owns that concern (secrets as ``dg.EnvVar``
references), and the resources hand the library explicit arguments or small spec objects. A
value given to a resource is therefore the value the code uses; nothing re-reads the
environment at run time.

- :mod:`.settings` — ``Settings``, the root with the derived paths;
- :mod:`.stores`, :mod:`.pipeline`, :mod:`.models`, :mod:`.serving` — the groups (each field's
  ``validation_alias`` names its environment variable);
- :mod:`.defaults` — the project checkout and the models PyPI packages ship;
- :mod:`.environment` — the process environment: offline defaults, child processes, secrets.

Every default works on one machine with no network: the local Elasticsearch node started by
``llmops-dagster services up``, MLflow on SQLite, DuckDB files, and the models that PyPI
packages ship.
"""

from llmops_dagster.config.defaults import (
    PROJECT_ROOT,
    default_embedding_model,
    default_generator_model,
    default_torch_threads,
    packaged_model_dir,
)
from llmops_dagster.config.environment import (
    OFFLINE_ENV_DEFAULTS,
    SERVER_ENV_DEFAULTS,
    apply_offline_env_defaults,
    apply_server_env_defaults,
    child_env,
    secret_from_env,
)
from llmops_dagster.config.models import JudgeSettings, ModelSettings
from llmops_dagster.config.pipeline import CorpusSettings, ScheduleSettings
from llmops_dagster.config.serving import ServingSettings
from llmops_dagster.config.settings import Settings
from llmops_dagster.config.stores import (
    DagsterSettings,
    ElasticsearchSettings,
    HomeSettings,
    LocalNodeSettings,
    LocalPostgresSettings,
    MlflowSettings,
    WarehouseSettings,
)

__all__ = [
    "OFFLINE_ENV_DEFAULTS",
    "PROJECT_ROOT",
    "SERVER_ENV_DEFAULTS",
    "CorpusSettings",
    "DagsterSettings",
    "ElasticsearchSettings",
    "HomeSettings",
    "JudgeSettings",
    "LocalNodeSettings",
    "LocalPostgresSettings",
    "MlflowSettings",
    "ModelSettings",
    "ScheduleSettings",
    "ServingSettings",
    "Settings",
    "WarehouseSettings",
    "apply_offline_env_defaults",
    "apply_server_env_defaults",
    "child_env",
    "default_embedding_model",
    "default_generator_model",
    "default_torch_threads",
    "packaged_model_dir",
    "secret_from_env",
]
