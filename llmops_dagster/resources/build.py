"""``build_resources``: every resource of the code location, each built by its own
``from_settings`` (the CLI and the server use the same resources, with secrets resolved)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops_dagster.resources.datasets import DatasetsResource, TextResource
from llmops_dagster.resources.elasticsearch import ElasticsearchResource
from llmops_dagster.resources.io_manager import RunScopedIOManager
from llmops_dagster.resources.mlflow import MlflowResource
from llmops_dagster.resources.models import ModelsResource
from llmops_dagster.resources.serving import ServingResource
from llmops_dagster.resources.warehouse import WarehouseResource

if TYPE_CHECKING:
    from llmops_dagster.config import Settings

#: Resource key → resource class; the key is the parameter name assets and sensors use.
RESOURCE_TYPES: dict[str, Any] = {
    "warehouse": WarehouseResource,
    "elasticsearch": ElasticsearchResource,
    "mlflow": MlflowResource,
    "models": ModelsResource,
    "text": TextResource,
    "datasets": DatasetsResource,
    "serving": ServingResource,
    # Evaluation outputs per run: concurrent evaluations never read each other's decision.
    "evaluation_io_manager": RunScopedIOManager,
}


def build_resources(
    settings: Settings, *, with_dlt: bool = True, resolve_secrets: bool = False
) -> dict[str, Any]:
    """Every resource, each filled from its own group of ``settings``.

    Secrets are ``dg.EnvVar`` references, resolved by Dagster at run time and never written
    into run config or the UI (see :mod:`llmops_dagster.resources.secrets`). Outside Dagster
    nothing resolves an ``EnvVar``, so ``resolve_secrets=True`` puts the values themselves
    into the resource objects.
    """
    resources: dict[str, Any] = {
        key: resource_type.from_settings(settings, resolve_secrets=resolve_secrets)
        for key, resource_type in RESOURCE_TYPES.items()
    }
    if with_dlt:
        from dagster_dlt import DagsterDltResource

        resources["dlt"] = DagsterDltResource()
    return resources
