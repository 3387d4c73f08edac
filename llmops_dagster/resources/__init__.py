"""Dagster resources: each owns the configuration of one concern and the client it makes.

Configuration flows one way: environment → ``config.Settings`` → each resource's
``from_settings`` (secrets as ``dg.EnvVar`` references, resolved only at run time) → explicit
arguments or spec objects into the library. No resource reads the environment or a settings
object at run time, so a value set on a resource is the value the code uses. Clients and models
are made lazily, on first use in a run, and kept for that run.

One module per resource (``warehouse``, ``elasticsearch``, ``mlflow``, ``models``, ``datasets``
for the text and dataset resources, ``serving``, ``io_manager``), the RAG pipeline factories
(``pipelines``), how secrets become fields (``secrets``) and ``build_resources`` (``build``).
"""

from llmops_dagster.resources.build import RESOURCE_TYPES, build_resources
from llmops_dagster.resources.datasets import DatasetsResource, TextResource
from llmops_dagster.resources.elasticsearch import ElasticsearchResource
from llmops_dagster.resources.io_manager import RunScopedIOManager
from llmops_dagster.resources.mlflow import MlflowResource
from llmops_dagster.resources.models import ModelsResource
from llmops_dagster.resources.pipelines import build_bundle_pipeline, build_rag_pipeline
from llmops_dagster.resources.serving import ServingResource
from llmops_dagster.resources.warehouse import WarehouseResource

__all__ = [
    "RESOURCE_TYPES",
    "DatasetsResource",
    "ElasticsearchResource",
    "MlflowResource",
    "ModelsResource",
    "RunScopedIOManager",
    "ServingResource",
    "TextResource",
    "WarehouseResource",
    "build_bundle_pipeline",
    "build_rag_pipeline",
    "build_resources",
]
