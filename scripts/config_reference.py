"""Print the configuration reference of docs/configuration.md, generated from the code.

- every setting (environment variable, type, default, description), read from the fields of
  ``llmops_dagster.config.Settings``' groups (between the settings markers);
- the environment defaults a process sets where it starts (``OFFLINE_ENV_DEFAULTS``,
  ``SERVER_ENV_DEFAULTS``; between the process-env markers);
- the per-run knobs: each asset's Dagster run config, fields and defaults (between the
  run-config markers).

`--write` replaces the three blocks, and a unit test checks that the page equals this output,
so the reference cannot drift from the code.
"""

from __future__ import annotations

import enum
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
SETTINGS = ("<!-- settings:begin -->", "<!-- settings:end -->")
PROCESS_ENV = ("<!-- process-env:begin -->", "<!-- process-env:end -->")
RUN_CONFIG = ("<!-- run-config:begin -->", "<!-- run-config:end -->")

#: Descriptions for the settings whose field has none in the code, by variable. A unit test
#: fails when an entry names no setting or a setting that has gained its own description, so
#: this list only shrinks (better: give the field a ``description=`` and delete the entry).
FALLBACK_DESCRIPTIONS: dict[str, str] = {
    "LLMOPS_HOME": "Downloads, local stores and caches (git-ignored).",
    "ELASTICSEARCH_API_KEY": "API key for the cluster (a `dg.EnvVar` in Dagster).",
    "ELASTICSEARCH_USERNAME": "Basic-auth user for the cluster.",
    "ELASTICSEARCH_PASSWORD": "Basic-auth password (a `dg.EnvVar` in Dagster).",
    "ELASTICSEARCH_CA_CERTS": "CA certificate that signed the cluster's TLS certificate.",
    "ELASTICSEARCH_VERIFY_CERTS": "Verify the cluster's TLS certificate.",
    "LLMOPS_ES_INDEX_ALIAS": "The alias every search goes through (versioned indices behind it).",
    "LLMOPS_ES_SHARDS": "Primary shards of a new physical index.",
    "LLMOPS_ES_HNSW_M": "HNSW graph: links per node.",
    "LLMOPS_ES_HNSW_EF_CONSTRUCTION": "HNSW graph: candidates while building.",
    "LLMOPS_ES_VERSION": "Elasticsearch version of the local node (Maven Central distribution).",
    "LLMOPS_ES_PORT": "HTTP port of the local node (transport: this + 100).",
    "LLMOPS_ES_HEAP": "JVM heap of the local node.",
    "LLMOPS_ES_EXTRA_JAVA_OPTS": "Extra JVM options of the local node.",
    "LLMOPS_MLFLOW_EXPERIMENT": "Experiment of the assets' lineage runs.",
    "LLMOPS_DLT_DATASET": "dlt dataset (schema) of the raw tables; never named like the file.",
    "LLMOPS_SAMPLE_DATA_DIR": "The folder loaded when LLMOPS_SOURCES_CONFIG names no file.",
    "LLMOPS_REDACT_PII": "Redact PII in documents before anything is chunked or embedded.",
    "LLMOPS_CHUNK_OVERLAP": "Tokens shared by neighbouring chunks.",
    "LLMOPS_REINDEX_CRON": "Schedule `reindex_incremental` (stopped by default).",
    "LLMOPS_FULL_REBUILD_CRON": "Schedule `reindex_weekly_full_rebuild` (stopped by default).",
    "LLMOPS_EMBED_BATCH": "Embedding batch size.",
    "LLMOPS_GENERATOR_GGUF_FILE": "GGUF file in LLMOPS_GENERATOR_MODEL's folder, if it has one.",
    "LLMOPS_TORCH_THREADS": "Torch threads; the default leaves one core to Elasticsearch/Dagster.",
    "LLMOPS_JUDGE": "DeepEval judge: none, the local generator's model, or an OpenAI endpoint.",
    "LLMOPS_JUDGE_BASE_URL": "OpenAI-compatible judge endpoint (…/v1).",
    "LLMOPS_JUDGE_MODEL": "Model name the judge endpoint serves.",
    "LLMOPS_JUDGE_MAX_NEW_TOKENS": "Token budget of one judge verdict.",
    "LLMOPS_SERVE_HOST": "Address `llmops-dagster serve` binds.",
    "LLMOPS_SERVE_PORT": "Port of `llmops-dagster serve`.",
    "LLMOPS_MAX_QUESTION_CHARS": "Longer questions get 422.",
    "LLMOPS_RATE_LIMIT_BURST": "Requests at once per API key (per client address without keys).",
    "LLMOPS_WATCH_THUMBS_DOWN_RATE": "serving_metrics warns above this share of rated answers.",
    "LLMOPS_WATCH_NO_ANSWER_RATE": "serving_metrics warns above this share of unanswered requests.",
}

#: Defaults computed on the machine (a path, a core count): shown by the function that computes
#: them, so the page is the same on every checkout.
_HOME_GROUP = "home"


def _group_models() -> list[tuple[str, type[BaseModel]]]:
    """(attribute of ``Settings``, settings group class), in the order of ``Settings``' fields.

    ``Settings.home`` is read through ``HomeSettings`` (its default factory), so that group
    stands for it."""
    from llmops_dagster.config import HomeSettings, Settings

    groups: list[tuple[str, type[BaseModel]]] = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            groups.append((name, annotation))
        elif name == _HOME_GROUP:
            groups.append((name, HomeSettings))
        else:  # a new root field must be placed here on purpose
            raise ValueError(f"Settings.{name} is neither a settings group nor `home`")
    return groups


def env_names(field: FieldInfo) -> list[str]:
    """The environment variable(s) a settings field is read from."""
    alias = field.validation_alias
    if alias is None:
        return []
    choices = getattr(alias, "choices", None)
    if choices is None:
        return [str(alias)]
    return [str(choice) for choice in choices]


def settings_fields() -> list[tuple[str, type[BaseModel], str, FieldInfo]]:
    """(group attribute, group class, field name, field) for every field of every group."""
    return [
        (group, model, name, field)
        for group, model in _group_models()
        for name, field in model.model_fields.items()
    ]


def setting_env_names() -> set[str]:
    """Every environment variable a setting reads."""
    return {name for *_, field in settings_fields() for name in env_names(field)}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{arg}`" for arg in args)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        return " \\| ".join(_type_name(arg) for arg in inner)
    if annotation is SecretStr:
        return "secret"
    if annotation is Path:
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        from llmops_dagster.config import PROJECT_ROOT

        try:  # paths in the checkout, relative: the page is the same on every machine
            return f"`{value.relative_to(PROJECT_ROOT)}`"
        except ValueError:
            return f"`{value}`"
    if isinstance(value, str) and value == "":
        return "empty"
    return f"`{value}`"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        factory = field.default_factory
        name = getattr(factory, "__name__", "")
        if name == "<lambda>" or not name:
            return "computed"
        return f"`{name}()`"
    if field.default is PydanticUndefined:
        return "required"
    return _value(field.default)


def _description(variables: list[str], field: FieldInfo) -> str:
    text = field.description or next(
        (FALLBACK_DESCRIPTIONS[v] for v in variables if v in FALLBACK_DESCRIPTIONS), ""
    )
    return " ".join(text.split()).replace("|", "\\|")


def settings_table() -> str:
    """One table per settings group: variable, type, default, description."""
    lines: list[str] = []
    for group, model in _group_models():
        doc = " ".join((model.__doc__ or "").split()).replace("``", "`")
        lines += ["", f"**`{group}`** — {doc}", ""]
        lines += ["| variable | type | default | description |", "|---|---|---|---|"]
        for field in model.model_fields.values():
            variables = env_names(field)
            names = " / ".join(f"`{name}`" for name in variables)
            lines.append(
                f"| {names} | {_type_name(field.annotation)} | {_default(field)} "
                f"| {_description(variables, field)} |"
            )
    return "\n".join(lines).strip()


def process_env_table() -> str:
    """The environment defaults a process sets where it starts (an exported value wins)."""
    from llmops_dagster.config import OFFLINE_ENV_DEFAULTS, SERVER_ENV_DEFAULTS

    lines = ["| variable | default | set by |", "|---|---|---|"]
    lines += [
        f"| `{key}` | `{value}` | every entry point (`apply_offline_env_defaults`) |"
        for key, value in OFFLINE_ENV_DEFAULTS.items()
    ]
    lines += [
        f"| `{key}` | `{value}` | `llmops-dagster serve` (`apply_server_env_defaults`) |"
        for key, value in SERVER_ENV_DEFAULTS.items()
    ]
    return "\n".join(lines)


def _config_class(assets_def: Any) -> type[BaseModel] | None:
    """The ``dg.Config`` class an asset's function takes, if any."""
    import dagster as dg

    fn = assets_def.op.compute_fn.decorated_fn
    for hint in typing.get_type_hints(fn).values():
        # Resources are Config classes too; run config is the one plain Config parameter.
        if (
            isinstance(hint, type)
            and issubclass(hint, dg.Config)
            and not issubclass(hint, (dg.ConfigurableResource, dg.ConfigurableIOManager))
        ):
            return hint
    return None


def _config_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _value(field.default_factory())  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        return "required"
    return _value(field.default)


def run_config_table() -> str:
    """Each asset's run config (Launchpad: ``ops.<asset>.config``): field, type, default."""
    from llmops_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    assets_defs = {id(graph.get(k).assets_def): graph.get(k).assets_def
                   for k in graph.get_all_asset_keys()}  # fmt: skip
    lines = ["| asset | field | type | default |", "|---|---|---|---|"]
    for assets_def in sorted(assets_defs.values(), key=lambda a: a.node_def.name):
        config = _config_class(assets_def)
        if config is None or not config.model_fields:
            continue
        for name, field in config.model_fields.items():
            lines.append(
                f"| `{assets_def.node_def.name}` | `{name}` | {_type_name(field.annotation)} "
                f"| {_config_default(field)} |"
            )
    return "\n".join(lines)


def block(text: str, begin: str, end: str) -> str:
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def _replace(text: str, begin: str, end: str, content: str) -> str:
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{content}\n{end}{rest.split(end, 1)[1]}"


def generated() -> dict[tuple[str, str], str]:
    return {
        SETTINGS: settings_table(),
        PROCESS_ENV: process_env_table(),
        RUN_CONFIG: run_config_table(),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's package, whatever the venv has installed
    blocks = generated()
    if "--write" in sys.argv:
        text = PAGE.read_text()
        for (begin, end), content in blocks.items():
            text = _replace(text, begin, end, content)
        PAGE.write_text(text)
    print("\n\n".join(blocks.values()))
