"""Index body (settings + mappings) for the chunk index: BM25 text fields and a dense vector.

Why detect the analyzer: a full Elasticsearch distribution ships the ``english`` analyzer
(stemming + stopwords, better BM25 recall), while the minimal distribution we run locally has no
analysis-common module, so asking for ``english`` there fails index creation. We probe the node
with ``_analyze`` and use the best analyzer it really offers, and record the choice in ``_meta``
so an evaluation can tell which analyzer produced its numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions

VectorIndexType = Literal[
    "int8_hnsw", "hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat"
]

#: Name of the custom analyzer built from core filters when ``english`` is unavailable.
CORE_ENGLISH_ANALYZER = "llmops_english_core"

#: Keyword metadata fields per docs/CONTRACTS.md ("Elasticsearch document"); filters use these.
KEYWORD_FIELDS: tuple[str, ...] = (
    "chunk_id",
    "doc_id",
    "source",
    "uri",
    "section",
    "content_hash",
    "model_id",
    # The document's audience (access.AUDIENCE_FIELD): every query filters on it.
    "allowed_groups",
)

#: 2: ``allowed_groups`` (access control). An older live index is rebuilt, not patched.
MAPPING_SCHEMA_VERSION = 2

_CORE_STOP_FILTER = "llmops_english_stop"
_CORE_ENGLISH_DEFINITION: dict[str, Any] = {
    "type": "custom",
    "tokenizer": "standard",
    "filter": ["lowercase", _CORE_STOP_FILTER],
}


@dataclass(frozen=True)
class VectorIndexOptions:
    """HNSW/quantisation options of the ``dense_vector`` field.

    ``int8_hnsw`` is Elasticsearch's default for float vectors: 4x smaller in memory than
    ``hnsw`` with a negligible recall loss for 384-dim sentence embeddings.
    """

    type: VectorIndexType = "int8_hnsw"
    m: int = 16
    ef_construction: int = 100

    def as_mapping(self) -> dict[str, Any]:
        options: dict[str, Any] = {"type": self.type}
        if self.type.endswith("hnsw"):  # flat types take no graph parameters
            options["m"] = self.m
            options["ef_construction"] = self.ef_construction
        return options


@dataclass(frozen=True)
class AnalyzerChoice:
    """The text analyzer used for ``title``/``text`` and, if custom, its definition."""

    name: str
    definition: dict[str, Any] | None = None
    reason: str = ""

    def analysis_settings(self) -> dict[str, Any]:
        if self.definition is None:
            return {}
        return {"analyzer": {self.name: self.definition}}


@dataclass(frozen=True)
class IndexSpec:
    """Everything that determines the physical index layout (settings + mappings)."""

    dims: int
    model_id: str
    similarity: Literal["cosine", "dot_product", "l2_norm", "max_inner_product"] = "cosine"
    vector_options: VectorIndexOptions = field(default_factory=VectorIndexOptions)
    shards: int = 1
    replicas: int = 0
    #: ``None`` → detect on the node (see :func:`detect_text_analyzer`).
    analyzer: str | None = None
    #: BM25 parameters; ``None`` keeps Lucene's defaults (k1 1.2, b 0.75).
    bm25_k1: float | None = None
    bm25_b: float | None = None

    def __post_init__(self) -> None:
        if self.dims < 1:
            raise ValueError(f"dims must be >= 1, got {self.dims}")
        if self.shards < 1 or self.replicas < 0:
            raise ValueError(f"bad shards/replicas: {self.shards}/{self.replicas}")


def analyzer_exists(client: Elasticsearch, analyzer: str) -> bool:
    """Whether the node knows a built-in analyzer of this name (an ``_analyze`` probe)."""
    try:
        client.indices.analyze(analyzer=analyzer, text="probe")
    except es_exceptions.BadRequestError:
        return False
    return True


def _filters_exist(client: Elasticsearch, filters: list[Any]) -> bool:
    try:
        client.indices.analyze(tokenizer="standard", filter=filters, text="Running probes")
    except es_exceptions.BadRequestError:
        return False
    return True


def detect_text_analyzer(client: Elasticsearch) -> AnalyzerChoice:
    """Best English-ish analyzer this node offers, in order of BM25 quality.

    1. ``english`` (stemming, possessives, stopwords) when analysis-common is installed.
    2. A custom analyzer of core filters, ``standard`` tokenizer + ``lowercase`` + English
       ``stop``: stopwords removed from long queries (SciFact claims) cut noise matches.
       A stemmer would be next, but every stemmer filter lives in analysis-common too.
    3. ``standard``.
    """
    if analyzer_exists(client, "english"):
        return AnalyzerChoice("english", reason="built-in english analyzer available")
    core_filters: list[Any] = ["lowercase", {"type": "stop", "stopwords": "_english_"}]
    if _filters_exist(client, core_filters):
        return AnalyzerChoice(
            CORE_ENGLISH_ANALYZER,
            _CORE_ENGLISH_DEFINITION,
            reason="no english analyzer (analysis-common absent); core lowercase + stop",
        )
    return AnalyzerChoice("standard", reason="only the standard analyzer is available")


def _resolve_analyzer(client: Elasticsearch | None, spec: IndexSpec) -> AnalyzerChoice:
    if spec.analyzer is None:
        if client is None:
            return AnalyzerChoice("standard", reason="no client to probe; standard")
        return detect_text_analyzer(client)
    if spec.analyzer == CORE_ENGLISH_ANALYZER:
        return AnalyzerChoice(CORE_ENGLISH_ANALYZER, _CORE_ENGLISH_DEFINITION, reason="configured")
    return AnalyzerChoice(spec.analyzer, reason="configured")


def chunk_set_digest(chunk_ids: Iterable[str]) -> str:
    """Order-independent sha256 of a set of chunk ids.

    A chunk id already hashes (doc_id, position, text), so the set of ids identifies the exact
    indexed content; the digest goes into ``_meta`` and the MLflow lineage of the index.
    """
    digest = hashlib.sha256()
    for chunk_id in sorted(set(chunk_ids)):
        digest.update(chunk_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def build_index_body(
    spec: IndexSpec,
    *,
    client: Elasticsearch | None = None,
    analyzer: AnalyzerChoice | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``indices.create`` body: settings (shards, replicas, analysis) and mappings with ``_meta``.

    Pass ``client`` to detect the analyzer on the node (or ``analyzer`` to fix it). ``meta``
    extends ``_meta`` (e.g. ``chunk_set_digest``, ``chunk_count``).
    """
    choice = analyzer or _resolve_analyzer(client, spec)
    index_settings: dict[str, Any] = {
        "number_of_shards": spec.shards,
        "number_of_replicas": spec.replicas,
    }
    analysis = choice.analysis_settings()
    if choice.definition is not None and _CORE_STOP_FILTER in choice.definition.get("filter", []):
        analysis["filter"] = {_CORE_STOP_FILTER: {"type": "stop", "stopwords": "_english_"}}
    if analysis:
        index_settings["analysis"] = analysis
    if spec.bm25_k1 is not None or spec.bm25_b is not None:
        similarity: dict[str, Any] = {"type": "BM25"}
        if spec.bm25_k1 is not None:
            similarity["k1"] = spec.bm25_k1
        if spec.bm25_b is not None:
            similarity["b"] = spec.bm25_b
        index_settings["similarity"] = {"default": similarity}

    text_field = {"type": "text", "analyzer": choice.name}
    properties: dict[str, Any] = {name: {"type": "keyword"} for name in KEYWORD_FIELDS}
    properties.update(
        {
            "title": dict(text_field),
            "text": dict(text_field),
            "position": {"type": "integer"},
            "updated_at": {"type": "date"},
            "embedding": {
                "type": "dense_vector",
                "dims": spec.dims,
                "index": True,
                "similarity": spec.similarity,
                "index_options": spec.vector_options.as_mapping(),
            },
        }
    )
    index_meta: dict[str, Any] = {
        "schema_version": MAPPING_SCHEMA_VERSION,
        "model_id": spec.model_id,
        "dims": spec.dims,
        "similarity": spec.similarity,
        "analyzer": choice.name,
        "analyzer_reason": choice.reason,
        "vector_index_type": spec.vector_options.type,
    }
    if meta:
        index_meta.update(meta)
    return {
        "settings": {"index": index_settings},
        "mappings": {
            # Unknown fields are rejected rather than guessed: a typo in the writer must fail
            # loudly instead of silently creating a new mapping.
            "dynamic": "strict",
            "_meta": index_meta,
            "properties": properties,
        },
    }


def index_meta(client: Elasticsearch, index: str) -> dict[str, Any]:
    """The ``_meta`` of an index (or of the index behind an alias), e.g. to check dims."""
    mappings = client.indices.get_mapping(index=index)
    for body in mappings.body.values():
        return dict(body.get("mappings", {}).get("_meta", {}))
    return {}


def mapped_fields(client: Elasticsearch, index: str) -> set[str]:
    """Top-level field names mapped in an index (or the index behind an alias)."""
    mappings = client.indices.get_mapping(index=index)
    for body in mappings.body.values():
        return set(body.get("mappings", {}).get("properties", {}))
    return set()


def mapped_vector_dims(client: Elasticsearch, index: str, field_name: str = "embedding") -> int:
    """``dims`` of the dense_vector field as mapped (for the "dims == model dims" check)."""
    mappings = client.indices.get_mapping(index=index)
    for body in mappings.body.values():
        return int(body["mappings"]["properties"][field_name]["dims"])
    raise LookupError(f"no index found for {index!r}")
