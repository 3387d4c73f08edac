"""A dlt ``rest_api`` source configured from YAML; tables ``api_<resource>``.

The YAML is dlt's own ``RESTAPIConfig`` (client, resource_defaults, resources) so dlt's docs
apply unchanged, with two additions:

- secrets are never in the file: any auth key ending in ``_env`` names a secret that dlt's config
  providers resolve when a run builds the source (``token_env: MY_API_TOKEN`` → ``token`` from
  the variable MY_API_TOKEN or ``.dlt/secrets.toml``; a dotted key such as
  ``sources.kb_api.token`` reads SOURCES__KB_API__TOKEN; see :mod:`.secrets`); a literal secret
  in YAML is refused;
- a resource may carry ``records:`` (a ``RecordMapping``) telling the documents step which
  fields are the id, title and text. It is removed before dlt sees the config.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dlt.sources import DltSource
from dlt.sources.rest_api import rest_api_source

from llmops_dagster.sources.secrets import missing_secret, read_secret
from llmops_dagster.sources.source_config import RecordMapping
from llmops_dagster.sources.tables import API_TABLE_PREFIX

_SECRET_KEYS = {"token", "password", "api_key", "client_secret", "access_token"}


@dataclass
class RestApiSettings:
    """A parsed REST API YAML: the dlt config (secrets resolved) and per-table record mappings."""

    name: str
    dlt_config: dict[str, Any]
    mappings: dict[str, RecordMapping] = field(default_factory=dict)
    max_table_nesting: int | None = 0


def _resolve_env_secrets(auth: dict[str, Any], where: str, resolve: bool) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for key, value in auth.items():
        if key in _SECRET_KEYS:
            raise ValueError(
                f"{where}: '{key}' must not be written in YAML; use '{key}_env: ENV_VAR_NAME'"
            )
        if key.endswith("_env") and not resolve:
            resolved[key] = value
        elif key.endswith("_env"):
            secret = read_secret(str(value))
            if not secret:
                raise ValueError(missing_secret(str(value), f"{where} {key}"))
            resolved[key[: -len("_env")]] = secret
        else:
            resolved[key] = value
    return resolved


def _resource_name(resource: Any) -> str:
    return resource if isinstance(resource, str) else str(resource["name"])


def parse_rest_api_config(
    raw: dict[str, Any], where: str = "rest_api config", resolve_secrets: bool = True
) -> RestApiSettings:
    """Turn the YAML mapping into a dlt config; pure, so tests need no file.

    ``resolve_secrets=False`` keeps ``*_env`` keys unresolved: for readers that need only the
    record mappings (the documents step), not credentials.
    """
    config = copy.deepcopy(raw)
    name = str(config.pop("name", "api"))
    max_table_nesting = config.pop("max_table_nesting", 0)
    client = config.get("client") or {}
    if "base_url" not in client:
        raise ValueError(f"{where}: client.base_url is required")
    if isinstance(client.get("auth"), dict):
        client["auth"] = _resolve_env_secrets(
            client["auth"], f"{where} client.auth", resolve_secrets
        )
    defaults = config.get("resource_defaults") or {}
    default_mapping = defaults.pop("records", None)

    resources: list[Any] = []
    mappings: dict[str, RecordMapping] = {}
    for resource in config.get("resources") or []:
        if isinstance(resource, str):
            resource = {"name": resource, "endpoint": {"path": resource}}
        resource = dict(resource)
        rname = _resource_name(resource)
        mapping = resource.pop("records", None) or default_mapping or {}
        table = resource.setdefault("table_name", f"{API_TABLE_PREFIX}{rname}")
        mappings[table] = RecordMapping.model_validate(mapping)
        endpoint = resource.get("endpoint")
        if isinstance(endpoint, dict) and isinstance(endpoint.get("auth"), dict):
            endpoint["auth"] = _resolve_env_secrets(
                endpoint["auth"], f"{where} {rname}.auth", resolve_secrets
            )
        resources.append(resource)
    if not resources:
        raise ValueError(f"{where}: no resources configured")
    config["resources"] = resources
    if defaults:
        config["resource_defaults"] = defaults
    return RestApiSettings(
        name=name, dlt_config=config, mappings=mappings, max_table_nesting=max_table_nesting
    )


def load_rest_api_config(path: str | Path, resolve_secrets: bool = True) -> RestApiSettings:
    """Read and parse the YAML (see ``rest_api.example.yaml``)."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return parse_rest_api_config(raw, where=str(path), resolve_secrets=resolve_secrets)


def make_rest_api_source(config: str | Path | RestApiSettings) -> DltSource:
    """The dlt source for a YAML path (or parsed settings).

    Nested objects are kept as JSON columns (``max_table_nesting: 0`` by default) so each record
    is one row of ``api_<resource>`` that the documents step can read without joins.
    """
    settings = config if isinstance(config, RestApiSettings) else load_rest_api_config(config)
    return rest_api_source(
        copy.deepcopy(settings.dlt_config),  # type: ignore[arg-type]
        name=settings.name,
        max_table_nesting=settings.max_table_nesting,
    )
