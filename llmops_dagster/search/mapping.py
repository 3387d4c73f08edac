"""Index body (settings + mappings) for the chunk index: BM25 text fields and a dense vector.

Why detect the analyzer: a full Elasticsearch distribution ships the ``english`` analyzer
(stemming + stopwords, better BM25 recall), while the minimal distribution we run locally has no
analysis-common module, so asking for ``english`` there fails index creation. We probe the node
with ``_analyze`` and use the best analyzer it really offers, and record the choice in ``_meta``
so an evaluation can tell which analyzer produced its numbers.

Stemming: where the node has ``english``, that analyzer stems ``title``/``text`` itself. Where it
has not, the index gets shadow fields ``title_stemmed``/``text_stemmed`` that the writer fills
with a Python-stemmed copy (:mod:`llmops_dagster.search.stemming`) and the retriever queries with a
stemmed query. ``_meta.text_stemming`` records which route the index uses (``analyzer``,
``python`` or ``none``); the writer and the retriever read it from the index, so an index is
always written and queried the way it was built, whatever the node offers later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions

from llmops_dagster.search.stemming import stemmed_field, stemmer_version

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
#: 3: ``text_stemming`` in ``_meta`` and, for the ``python`` route, the stemmed shadow fields.
#: A schema-2 index still works: it reads as ``text_stemming: none`` (plain fields only).
MAPPING_SCHEMA_VERSION = 3

#: The text fields BM25 searches; the ``python`` route adds a stemmed shadow of each.
TEXT_FIELDS: tuple[str, ...] = ("title", "text")

#: How an index stems its text: by the node's analyzer, by Python into shadow fields, or not.
TextStemming = Literal["analyzer", "python", "none"]
#: ``auto``: ``analyzer`` when the chosen analyzer stems (``english``), else ``python``.
StemmingSetting = Literal["auto", "analyzer", "python", "none"]

#: Built-in analyzers that stem English themselves.
STEMMING_ANALYZERS: frozenset[str] = frozenset({"english"})

_CORE_STOP_FILTER = "llmops_english_stop"
_CORE_ENGLISH_DEFINITION: dict[str, Any] = {
    "type": "custom",
    "tokenizer": "standard",
    "filter": ["lowercase", _CORE_STOP_FILTER],
}


#: Elasticsearch refuses ``bbq_hnsw``/``bbq_flat`` for fewer dimensions than this.
BBQ_MIN_DIMS = 64

#: Rescoring of ``bbq_*`` vectors unless configured: 3x, Elasticsearch's own default for BBQ.
DEFAULT_BBQ_OVERSAMPLE = 3.0


@dataclass(frozen=True)
class VectorIndexOptions:
    """HNSW/quantisation options of the ``dense_vector`` field.

    Default ``bbq_hnsw`` with 3x rescoring, chosen by ``benchmarks/vector_options.py`` on
    SciFact (all-MiniLM-L6-v2, 384 dims; two runs): kNN nDCG@10 0.6451 (= float ``hnsw``, above
    ``int8_hnsw`` 0.6442), Recall@100 0.9233 (hnsw and int8 0.9250), hybrid_rrf nDCG@10
    0.7101-0.7103 (all four options within 0.0008), while the graph search reads 1-bit vectors:
    0.32 MB of quantized vectors for 5,183 chunks vs 2.07 MB for int8 (the float vectors stay
    on disk for the rescoring in every quantized type). ``bbq_flat`` scores the same here but
    scans every vector per query, so it does not scale with the corpus. ``bbq_hnsw`` is also
    Elasticsearch's own default for float vectors of >= 384 dims since 9.1; we pin it (and the
    oversampling) so the index does not change with the node.
    """

    type: VectorIndexType = "bbq_hnsw"
    m: int = 16
    ef_construction: int = 100
    #: ``rescore_vector.oversample`` for quantized types: fetch ``k x oversample`` candidates
    #: by the quantized score and rescore them with the raw float vectors (0: no rescoring).
    #: ``None``: :data:`DEFAULT_BBQ_OVERSAMPLE` for ``bbq_*`` types (1-bit scores alone lose
    #: recall), nothing for the others.
    rescore_oversample: float | None = None

    def __post_init__(self) -> None:
        if self.rescore_oversample is not None:
            if self.type in {"hnsw", "flat"}:
                raise ValueError(
                    f"vector_options.rescore_oversample needs a quantized type, not {self.type!r}"
                )
            if not (self.rescore_oversample >= 1.0 or self.rescore_oversample == 0):
                raise ValueError(
                    "vector_options.rescore_oversample must be >= 1.0 (or 0: no rescoring), "
                    f"got {self.rescore_oversample}"
                )

    def for_dims(self, dims: int) -> VectorIndexOptions:
        """These options for vectors of ``dims`` dimensions: Elasticsearch refuses ``bbq_*``
        below 64 dimensions, so such (small, test or toy) models get the ``int8_*`` type of the
        same structure instead, with rescoring only if it was asked for."""
        if not self.type.startswith("bbq") or dims >= BBQ_MIN_DIMS:
            return self
        return replace(self, type=self.type.replace("bbq_", "int8_"))  # type: ignore[arg-type]

    def as_mapping(self) -> dict[str, Any]:
        options: dict[str, Any] = {"type": self.type}
        if self.type.endswith("hnsw"):  # flat types take no graph parameters
            options["m"] = self.m
            options["ef_construction"] = self.ef_construction
        oversample = self.rescore_oversample
        if oversample is None and self.type.startswith("bbq"):
            oversample = DEFAULT_BBQ_OVERSAMPLE
        if oversample is not None:
            options["rescore_vector"] = {"oversample": oversample}
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
    #: ``auto``: the analyzer stems where it can (``english``), else Python shadow fields.
    stemming: StemmingSetting = "auto"

    def __post_init__(self) -> None:
        if self.dims < 1:
            raise ValueError(f"dims must be >= 1, got {self.dims}")
        if self.shards < 1 or self.replicas < 0:
            raise ValueError(f"bad shards/replicas: {self.shards}/{self.replicas}")
        if self.stemming not in {"auto", "analyzer", "python", "none"}:
            raise ValueError(
                f"stemming must be one of auto, analyzer, python, none; got {self.stemming!r}"
            )


def resolve_stemming(setting: StemmingSetting, analyzer: str) -> TextStemming:
    """The stemming route of an index: ``auto`` picks the analyzer when it stems, else Python.

    ``analyzer`` on a non-stemming analyzer is refused: the index would claim a stemming it
    does not have, and the retriever would skip the shadow fields it needs.
    """
    if setting == "auto":
        return "analyzer" if analyzer in STEMMING_ANALYZERS else "python"
    if setting == "analyzer" and analyzer not in STEMMING_ANALYZERS:
        raise ValueError(
            f"stemming='analyzer' needs a stemming analyzer ({sorted(STEMMING_ANALYZERS)}), "
            f"but the index uses {analyzer!r}; use stemming='python' or 'auto'"
        )
    return setting


def text_stemming_of(meta: dict[str, Any]) -> TextStemming:
    """The route recorded in an index's ``_meta`` (indices before schema 3: ``none``)."""
    value = meta.get("text_stemming")
    return value if value in {"analyzer", "python"} else "none"


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
    vector_options = spec.vector_options.for_dims(spec.dims)
    stemming = resolve_stemming(spec.stemming, choice.name)
    properties: dict[str, Any] = {name: {"type": "keyword"} for name in KEYWORD_FIELDS}
    properties.update({name: dict(text_field) for name in TEXT_FIELDS})
    if stemming == "python":
        # Already stemmed and lowercased by Python; the same analyzer only splits on spaces
        # and drops stopwords, so the query (stemmed the same way) meets the same tokens.
        properties.update({stemmed_field(name): dict(text_field) for name in TEXT_FIELDS})
    properties.update(
        {
            "position": {"type": "integer"},
            "updated_at": {"type": "date"},
            "embedding": {
                "type": "dense_vector",
                "dims": spec.dims,
                "index": True,
                "similarity": spec.similarity,
                "index_options": vector_options.as_mapping(),
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
        "text_stemming": stemming,
        "vector_index_type": vector_options.type,
    }
    if stemming == "python":
        index_meta["stemmer"] = stemmer_version()
        index_meta["stemmed_fields"] = [stemmed_field(name) for name in TEXT_FIELDS]
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
