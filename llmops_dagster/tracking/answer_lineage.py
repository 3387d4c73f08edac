"""From one served answer (an MLflow trace id) back to everything that produced it.

The trace's metadata names the bundle, prompt, adapter, embedding model and the physical index
the alias pointed at when the answer was served, plus the retrieved and cited chunk ids. The
chunks are looked up in that physical index (kept for rollback; a pruned index is reported, not
guessed), which gives their source documents; the bundle's registering run (the evaluation
that produced it) continues the walk through the asset runs' ``upstream.*`` tags
(:func:`llmops_dagster.tracking.trace.trace`) to the index, chunks, documents and code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.tracking.trace import LineageChain, LineageError, trace

_CHUNK_FIELDS = ["doc_id", "title", "source", "uri", "section", "content_hash"]


@dataclass
class AnswerChunk:
    chunk_id: str
    rank: int
    cited: bool
    doc_id: str | None = None
    title: str | None = None
    source: str | None = None
    uri: str | None = None
    found: bool = False


@dataclass
class AnswerLineage:
    trace_id: str
    question: str
    answer: str
    bundle_uri: str
    bundle_version: str
    prompt_uri: str
    prompt_version: str
    adapter_uri: str
    model_id: str
    embedding_model_id: str
    index_alias: str
    index_name: str
    chunks: list[AnswerChunk]
    #: The walk from the bundle's registering (evaluation) run; None for the base model.
    bundle_chain: LineageChain | None
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems and (self.bundle_chain is None or self.bundle_chain.complete)


def _meta(trace: Any, key: str) -> str:
    return str(trace.info.trace_metadata.get(key, ""))


def answer_lineage(client: Any, trace_id: str, es: Any | None = None) -> AnswerLineage:
    """The lineage of the answer traced as ``trace_id``; ``es`` looks the chunks up."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_trace(trace_id)
    except MlflowException as exc:
        raise LineageError(f"no trace {trace_id}: {exc.message}") from exc
    if found is None or keys.BUNDLE_URI not in found.info.trace_metadata:
        raise LineageError(f"{trace_id} is not a trace of a served answer (no llmops metadata)")
    problems: list[str] = []
    retrieved = json.loads(_meta(found, keys.RETRIEVED_CHUNK_IDS) or "[]")
    cited = set(json.loads(_meta(found, keys.CITED_CHUNK_IDS) or "[]"))
    chunks = [AnswerChunk(cid, rank + 1, cid in cited) for rank, cid in enumerate(retrieved)]
    index_name = _meta(found, keys.INDEX_NAME)
    if es is not None and chunks:
        if not index_name:
            problems.append("the trace does not name the physical index")
        else:
            _lookup_chunks(es, index_name, chunks, problems)
    bundle_uri = _meta(found, keys.BUNDLE_URI)
    chain = None
    if bundle_uri:
        try:
            chain = trace(client, bundle_uri)
        except LineageError as exc:
            problems.append(str(exc))
    root = next((s for s in found.data.spans if s.parent_id is None), None)
    inputs = root.inputs if root is not None and isinstance(root.inputs, dict) else {}
    outputs = root.outputs if root is not None and isinstance(root.outputs, dict) else {}
    return AnswerLineage(
        trace_id=trace_id,
        question=str(inputs.get("question", found.info.request_preview or "")),
        answer=str(outputs.get("answer", found.info.response_preview or "")),
        bundle_uri=bundle_uri,
        bundle_version=_meta(found, keys.BUNDLE_VERSION),
        prompt_uri=_meta(found, keys.PROMPT_URI),
        prompt_version=_meta(found, keys.PROMPT_VERSION),
        adapter_uri=_meta(found, keys.ADAPTER_URI),
        model_id=_meta(found, keys.MODEL_ID),
        embedding_model_id=_meta(found, keys.EMBEDDING_MODEL),
        index_alias=_meta(found, keys.INDEX_ALIAS),
        index_name=index_name,
        chunks=chunks,
        bundle_chain=chain,
        problems=problems,
    )


def _lookup_chunks(es: Any, index: str, chunks: list[AnswerChunk], problems: list[str]) -> None:
    from elasticsearch import ApiError, NotFoundError, TransportError

    try:
        response = es.mget(index=index, ids=[c.chunk_id for c in chunks], source=_CHUNK_FIELDS)
    except NotFoundError:
        problems.append(f"index {index} no longer exists (pruned after a rebuild)")
        return
    except (ApiError, TransportError) as exc:
        problems.append(f"could not look the chunks up in {index}: {exc}")
        return
    for chunk, doc in zip(chunks, response["docs"], strict=True):
        if not doc.get("found"):
            problems.append(f"chunk {chunk.chunk_id} is not in {index}")
            continue
        source = doc["_source"]
        chunk.found = True
        chunk.doc_id = source.get("doc_id")
        chunk.title = source.get("title")
        chunk.source = source.get("source")
        chunk.uri = source.get("uri")
