"""Elasticsearch: index mapping, bulk writer, versioned aliases, fusion, hybrid retriever.

Dagster-free; the index asset and the RAG retriever are thin wrappers around these.
"""

from llmops_dagster.search.aliases import (
    RebuildError,
    RebuildReport,
    RollbackError,
    current_index,
    list_versions,
    point_alias,
    rebuild,
    rollback,
)
from llmops_dagster.search.fusion import linear_fuse, normalize_scores, rrf_fuse
from llmops_dagster.search.mapping import (
    IndexSpec,
    VectorIndexOptions,
    build_index_body,
    chunk_set_digest,
    detect_text_analyzer,
    index_meta,
    mapped_vector_dims,
)
from llmops_dagster.search.retriever import (
    Hit,
    HybridRetriever,
    RetrieverConfig,
    SearchError,
    SearchMode,
)
from llmops_dagster.search.writer import BulkFailure, BulkReport, IndexingError, write_chunks

__all__ = [
    "BulkFailure",
    "BulkReport",
    "Hit",
    "HybridRetriever",
    "IndexSpec",
    "IndexingError",
    "RebuildError",
    "RebuildReport",
    "RetrieverConfig",
    "RollbackError",
    "SearchError",
    "SearchMode",
    "VectorIndexOptions",
    "build_index_body",
    "chunk_set_digest",
    "current_index",
    "detect_text_analyzer",
    "index_meta",
    "linear_fuse",
    "list_versions",
    "mapped_vector_dims",
    "normalize_scores",
    "point_alias",
    "rebuild",
    "rollback",
    "rrf_fuse",
    "write_chunks",
]
