"""Document-level access control on the real pipeline and the real Elasticsearch node.

The sample corpus (with its four confidential documents, audiences as in the repository's
sources.yaml) is ingested, chunked, embedded and indexed once per module. The tests then try to
reach a confidential document as someone outside its group, in every search mode, with the
strongest queries there are — its own title (BM25) and its own chunk embedding (kNN) — and
through the evaluation and the fine-tuning dataset; and they change an audience in
``sources.yaml`` and check that the next run re-syncs exactly that document's chunks, without
re-chunking or re-embedding anything.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pytest
from elasticsearch import Elasticsearch

from llmops_dagster.access import Principal
from llmops_dagster.config import Settings
from llmops_dagster.definitions import build_resources
from llmops_dagster.evaluate.bundle_eval import evaluate_pipeline
from llmops_dagster.evaluate.golden import GoldenSet, load_golden
from llmops_dagster.qa import QAItem, load_qa_jsonl, qa_digest
from llmops_dagster.rag.extractive import ExtractiveAnswerer
from llmops_dagster.rag.pipeline import RagPipeline, RetrievalSettings
from llmops_dagster.rag.prompts import load_prompt
from llmops_dagster.search.aliases import version_index_name
from llmops_dagster.search.mapping import IndexSpec, build_index_body
from llmops_dagster.search.retriever import HybridRetriever
from llmops_dagster.search.sync import sync_index
from llmops_dagster.sources.source_config import (
    AudienceRule,
    SourcesConfig,
    default_sources_config,
)
from llmops_dagster.train.dataset import DEFAULT_TRAIN_QA, build_sft_dataset, retriever_context_fn
from tests.conftest import asset_metadata, drop_indices
from tests.support.dagster import materialize_groups
from tests.support.settings import isolated_settings
from tests.support.warehouse import copy_embedding_cache

pytestmark = pytest.mark.integration

PROMPT_K = 5  # chunks in a prompt in these tests

MODES = ("bm25", "knn", "hybrid_rrf", "hybrid_linear")
HR, SECURITY, PUBLIC_GROUP = "hr", "security", "public"
#: doc id → (its group, strings found in that document and in no public one).
CONFIDENTIAL: dict[str, tuple[str, tuple[str, ...]]] = {
    "fs:confidential/hr/salary-bands.md": (HR, ("68,500", "Curlew", "Remuneration Panel")),
    "fs:confidential/hr/disciplinary-procedure.md": (HR, ("Casebook", "DP-YYYY-NNN")),
    "fs:confidential/security/incident-response-runbook.txt": (
        SECURITY,
        ("osprey-breakglass", "sec-falcon", "nd-forensics-vault"),
    ),
    "fs:confidential/security/red-team-findings-2026.md": (SECURITY, ("Magpie", "RT-07")),
}


@dataclass
class Built:
    settings: Settings
    sources: SourcesConfig
    first: dg.ExecuteInProcessResult
    embedder: Any

    @property
    def alias(self) -> str:
        return self.settings.elasticsearch.index_alias


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory,
    es_settings: Settings,
    sample_dir: Path,
    sample_embeddings: Path,
) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("access")
    settings = isolated_settings(
        root / "llmops-home",
        elasticsearch={
            "url": es_settings.elasticsearch.url,
            "index_alias": f"test-acl-{uuid.uuid4().hex[:8]}",
        },
    )
    corpus = root / "corpus"
    shutil.copytree(sample_dir, corpus)
    # The demo's sources (the same audiences as the repository's sources.yaml).
    sources = default_sources_config(corpus)
    copy_embedding_cache(sample_embeddings, settings)
    first = materialize_groups(settings, sources)
    embedder = build_resources(settings)["models"].embedder()
    yield Built(settings, sources, first, embedder)
    drop_indices(Elasticsearch(es_settings.es_url), settings.elasticsearch.index_alias)


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    return con.execute(sql, list(params)).fetchall()


def _doc_chunks(settings: Settings, doc_id: str) -> list[tuple[str, list[float]]]:
    """(chunk_id, its cached vector) of a document's active chunks."""
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        rows = _query(
            con,
            "SELECT c.chunk_id, v.vector FROM llmops.chunks c JOIN llmops.embedding_cache v "
            "USING (content_hash) WHERE c.doc_id = ? AND c.status = 'active' ORDER BY position",
            [doc_id],
        )
    return [(chunk_id, list(vector)) for chunk_id, vector in rows]


def _title(settings: Settings, doc_id: str) -> str:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        ((title,),) = _query(con, "SELECT title FROM llmops.documents WHERE doc_id = ?", [doc_id])
    return str(title)


class _FixedEncoder:
    """Encodes every query as one given vector: the document's own chunk embedding."""

    def __init__(self, vector: list[float]) -> None:
        self.vector = np.asarray(vector, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vector] * len(texts))


def _unreadable_strings(principal: Principal | None) -> list[str]:
    groups = set((principal or Principal.public()).visible_groups)
    return [s for group, strings in CONFIDENTIAL.values() if group not in groups for s in strings]


def _assert_nothing_unreadable(hits: Sequence[Any], principal: Principal | None) -> None:
    who = principal or Principal.public()
    for hit in hits:
        assert who.can_read(hit.metadata["allowed_groups"]), (hit.doc_id, who)
        assert CONFIDENTIAL.get(hit.doc_id, (PUBLIC_GROUP,))[0] in who.visible_groups
        for secret in _unreadable_strings(principal):
            assert secret not in hit.text and secret not in hit.title, (secret, hit.doc_id)


def test_the_sample_corpus_is_indexed_with_its_audiences(built: Built, es_client) -> None:
    docs = asset_metadata(built.first, "documents")
    assert (docs["total_documents"], docs["new"], docs["rejected"]) == (51, 51, 0)
    index = asset_metadata(built.first, "search_index")
    assert index["mode"] == "rebuild"
    es_client.indices.refresh(index=built.alias)
    counts = es_client.search(
        index=built.alias,
        size=0,
        aggs={"groups": {"terms": {"field": "allowed_groups"}}},
    )["aggregations"]["groups"]["buckets"]
    per_group = {bucket["key"]: bucket["doc_count"] for bucket in counts}
    confidential_chunks = {
        doc_id: len(_doc_chunks(built.settings, doc_id)) for doc_id in CONFIDENTIAL
    }
    assert confidential_chunks == {
        "fs:confidential/hr/salary-bands.md": 6,
        "fs:confidential/hr/disciplinary-procedure.md": 6,
        "fs:confidential/security/incident-response-runbook.txt": 3,
        "fs:confidential/security/red-team-findings-2026.md": 5,
    }
    assert per_group == {"public": 199, HR: 12, SECURITY: 8}
    assert index["doc_count"] == 219


@pytest.mark.parametrize("doc_id", sorted(CONFIDENTIAL))
def test_outsiders_never_retrieve_a_confidential_document_in_any_mode(
    built: Built, es_client, doc_id: str
) -> None:
    """Query = the document's own title (BM25) and its own chunk embedding (kNN): the best
    possible match. No principal and a principal of the other group get public hits only;
    a member of the group gets this document first, in every mode."""
    group, _ = CONFIDENTIAL[doc_id]
    other = SECURITY if group == HR else HR
    title = _title(built.settings, doc_id)
    chunks = _doc_chunks(built.settings, doc_id)
    assert chunks
    outsiders: list[Principal | None] = [None, Principal("outsider", frozenset({other}))]
    insider = Principal("insider", frozenset({group}))
    for chunk_id, vector in chunks:
        retriever = HybridRetriever(es_client, built.alias, _FixedEncoder(vector))
        for mode in MODES:
            for who in outsiders:
                hits = retriever.search(title, mode=mode, k=10, principal=who)
                # The query still works for them: public chunks fill the ranking (BM25 has only
                # as many as share a title word).
                assert hits and (mode == "bm25" or len(hits) == 10), (mode, who)
                assert doc_id not in {h.doc_id for h in hits}, (mode, who)
                _assert_nothing_unreadable(hits, who)
            hits = retriever.search(title, mode=mode, k=10, principal=insider)
            assert hits[0].doc_id == doc_id, (mode, [h.doc_id for h in hits[:3]])
            if mode == "knn":  # its own embedding: the very chunk, at cosine 1
                assert hits[0].chunk_id == chunk_id
            _assert_nothing_unreadable(hits, insider)

    # The raw kNN clause the retriever builds, sent as is: the filter is inside the kNN search,
    # so the k nearest *readable* chunks come back, never an emptied top-k.
    retriever = HybridRetriever(es_client, built.alias)
    for who in outsiders:
        clauses = [(who or Principal.public()).filter_clause()]
        knn = retriever.knn_clause(chunks[0][1], clauses, k=5, num_candidates=100)
        response = es_client.search(index=built.alias, knn=knn, size=5, source=["doc_id"])
        found = [hit["_source"]["doc_id"] for hit in response["hits"]["hits"]]
        assert len(found) == 5 and not set(found) & set(CONFIDENTIAL)


def _pipeline(built: Built, es_client) -> RagPipeline:
    return RagPipeline(
        retriever=HybridRetriever(es_client, built.alias, built.embedder),
        generator=ExtractiveAnswerer(),
        prompt=load_prompt(),
        # k=5: what is under test is who may read a chunk, not ranking. With English stemming
        # q202's document ranks 4th, behind public pages on reviews and pay.
        retrieval=RetrievalSettings(mode="hybrid_rrf", k=PROMPT_K, metrics_depth=10),
    )


def test_evaluation_rows_hold_only_what_each_case_may_read(built: Built, es_client) -> None:
    """The 12 confidential golden questions, asked by their group (as in qa.jsonl), by nobody
    and by the other group: the per-case rows of the outsiders carry no confidential id or
    text, while every insider case retrieves its document into the prompt's top PROMPT_K."""
    confidential = [item for item in load_golden().items if item.groups]
    assert [item.id for item in confidential] == [f"q{i}" for i in range(201, 213)]
    items: list[QAItem] = []
    for item in confidential:
        other = SECURITY if item.groups == (HR,) else HR
        items += [
            item,
            replace(item, id=f"{item.id}-anon", reference_answer="unknown", groups=()),
            replace(item, id=f"{item.id}-other", reference_answer="unknown", groups=(other,)),
        ]
    golden = GoldenSet.from_items(items, name="access")
    result = evaluate_pipeline(_pipeline(built, es_client), golden, metrics=[], batch_size=4)
    rows = {row["case_id"]: row for row in result.rows}
    assert len(rows) == 36
    for item in items:
        row = rows[item.id]
        assert json.loads(row["groups"]) == list(item.groups)
        retrieved = json.loads(row["retrieved_doc_ids"])
        who = item.principal
        if item.id.endswith(("-anon", "-other")):
            # metrics_depth counts documents: the ranking is filled to 10 distinct ones.
            assert len(set(retrieved)) == 10 and not set(retrieved) & set(item.relevant_doc_ids)
            unreadable = {d for d, (g, _) in CONFIDENTIAL.items() if g not in who.visible_groups}
            assert not set(retrieved) & unreadable, item.id
            for secret in _unreadable_strings(who):
                assert secret not in row["actual_output"], (item.id, secret)
        else:  # within the k chunks the prompt gets
            rank = retrieved.index(item.relevant_doc_ids[0])
            assert rank < PROMPT_K, (item.id, retrieved[:PROMPT_K])


class _ChatML:
    """A stand-in chat template (the dataset's formatting is not under test here)."""

    eos_token = "<|im_end|>"

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
        return text + ("<|im_start|>assistant\n" if kwargs.get("add_generation_prompt") else "")


def test_finetuning_context_is_public_unless_groups_are_configured(built: Built, es_client) -> None:
    """The dataset asset's path (``pipeline.context_fn(principal)``; default: public) keeps
    confidential chunks out of every prompt; naming the groups lets them in."""
    items = [replace(item, groups=()) for item in load_golden().items if item.groups]
    confidential_chunks = {
        chunk_id for doc_id in CONFIDENTIAL for chunk_id, _ in _doc_chunks(built.settings, doc_id)
    }
    pipeline = _pipeline(built, es_client)
    public = build_sft_dataset(items, tokenizer=_ChatML(), context_fn=pipeline.context_fn())
    for example in public.train + public.validation:
        assert len(example.context_chunk_ids) == PROMPT_K
        assert not set(example.context_chunk_ids) & confidential_chunks, example.id
        context = example.prompt.replace(example.question, "")  # the question is the asker's
        for secret in _unreadable_strings(None):
            assert secret not in context, (example.id, secret)

    both = Principal("finetune", frozenset({HR, SECURITY}))
    for context_fn in (
        pipeline.context_fn(both),
        retriever_context_fn(pipeline.retriever, k=PROMPT_K, principal=both),
    ):
        allowed = build_sft_dataset(items, tokenizer=_ChatML(), context_fn=context_fn)
        examples = allowed.train + allowed.validation
        assert all(set(e.context_chunk_ids) & confidential_chunks for e in examples)


def test_the_finetune_dataset_asset_takes_only_what_the_training_audience_may_read(
    built: Built, es_client, tmp_path: Path
) -> None:
    """An accepted hr answer in the training QA file (it carries its ``groups``): the asset,
    with the default training audience (public), leaves it out and says how many it dropped,
    and refuses context groups beyond that audience before anything is built. The RAFT items it
    drafts from the warehouse's chunks (six, a small ``drafted_items``) come from public chunks
    only, never restate a golden item, and sit among distractors the index returned as the
    public audience, citing their own chunk."""
    from assets.model import finetune_dataset

    public = [
        {"id": i.id, "question": i.question, "reference_answer": i.reference_answer,
         "relevant_doc_ids": list(i.relevant_doc_ids)}
        for i in load_qa_jsonl(DEFAULT_TRAIN_QA)[:4]
    ]  # fmt: skip
    hr_item = {
        "id": "fb-hr",
        "question": "What is the salary range of band P4?",
        "reference_answer": "£68,500 to £84,000, set by the Remuneration Panel.",
        "relevant_doc_ids": ["fs:confidential/hr/salary-bands.md"],
        "groups": ["hr"],
    }
    qa = tmp_path / "train.jsonl"
    qa.write_text("".join(json.dumps(row) + "\n" for row in [*public, hr_item]))
    settings = built.settings.override(corpus={"train_qa_path": qa}, models={"torch_threads": 1})
    resources = build_resources(settings)
    result = dg.materialize(
        [finetune_dataset],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"finetune_dataset": {"config": {"drafted_items": 6}}}},
    )
    assert result.success
    meta = asset_metadata(result, "finetune_dataset")
    assert (meta["n_dropped_audience"], meta["audience"]) == (1, "public")
    # The sample corpus's 219 chunks, 20 of them confidential (tests/unit/test_raft.py drafts
    # from the same chunks): 194 public items survive the golden-overlap rule, 70 do not.
    assert {k: meta[k] for k in ("n_handwritten", "n_drafted", "n_train", "n_validation")} == {
        "n_handwritten": 4,
        "n_drafted": 6,
        "n_train": 8,
        "n_validation": 2,
    }
    assert (meta["n_chunks_seen"], meta["n_chunks_dropped_audience"]) == (219, 20)
    assert (meta["n_drafted_candidates"], meta["n_dropped_golden_overlap"]) == (194, 70)
    assert meta["n_drafted_short_context"] == 0
    assert meta["golden_digest"] == load_golden(built.settings.corpus.golden_path).version
    # (The metadata's "path" is the IO manager's pickle: it overrides the asset's own.)
    built_text = (settings.datasets_dir / f"sft-{meta['digest'][:12]}.jsonl").read_text()
    assert "fb-hr" not in built_text
    for secret in _unreadable_strings(None):
        assert secret not in built_text, secret
    rows = [json.loads(line) for line in built_text.splitlines()]
    drafted = [r for r in rows if r["id"].startswith("raft-")]
    confidential_chunks = {
        chunk_id for doc_id in CONFIDENTIAL for chunk_id, _ in _doc_chunks(settings, doc_id)
    }
    live = {h["_id"] for h in es_client.search(index=built.alias, size=1000)["hits"]["hits"]}
    assert len(drafted) == 6
    for row in drafted:
        (oracle,) = row["cited_chunk_ids"]
        assert row["completion"].startswith(f"{row['reference_answer']} [chunk:{oracle}]")
        assert len(row["context_chunk_ids"]) == 3 and oracle in row["context_chunk_ids"]
        assert set(row["context_chunk_ids"]) <= live - confidential_chunks
    mixed = load_qa_jsonl(meta["qa_path"])  # what entered the dataset: not the hr item
    assert qa_digest(mixed) == meta["mix_digest"] and len(mixed) == 4 + 6
    assert "fb-hr" not in {item.id for item in mixed}

    refused = dg.materialize(
        [finetune_dataset],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"finetune_dataset": {"config": {"context_groups": ["hr"]}}}},
        raise_on_error=False,
    )
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.is_step_failure]
    message = str(failure.step_failure_data.error)
    assert "context_groups ['hr'] are beyond the training audience" in message


def test_golden_candidates_drafted_as_public_hold_nothing_from_a_confidential_document(
    built: Built,
) -> None:
    """The `golden_candidates` asset on the indexed sample corpus (the unit tests in
    tests/unit/test_golden_candidates.py draft from the same 219 chunks): the 20 confidential
    chunks are counted and never drafted from, 70 drafts restating a golden item are dropped,
    and the 40 pending candidates (one per document) name public documents only."""
    from assets.golden import golden_candidates
    from llmops_dagster.evaluate.golden_candidates import CANDIDATES_FILE, GoldenReview

    result = dg.materialize(
        [golden_candidates],
        resources=build_resources(built.settings),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    meta = asset_metadata(result, "golden_candidates")
    counts = ("n_candidates", "n_dropped_golden_overlap", "n_chunks_dropped_audience")
    assert {k: meta[k] for k in (*counts, "n_chunks_seen", "n_documents")} == {
        "n_candidates": 40,
        "n_dropped_golden_overlap": 70,
        "n_chunks_dropped_audience": 20,
        "n_chunks_seen": 219,
        "n_documents": 40,
    }
    assert meta["audience"] == "public"
    path = built.settings.datasets_dir / CANDIDATES_FILE
    assert meta["path"] == str(path)
    pending = GoldenReview(path, built.settings.corpus.golden_path).candidates()
    assert len(pending) == 40
    assert not {d for c in pending for d in c.item.relevant_doc_ids} & set(CONFIDENTIAL)
    assert all(c.item.groups == () for c in pending)
    text = path.read_text()
    for secret in _unreadable_strings(None):
        assert secret not in text, secret


def test_an_index_from_before_access_control_is_rebuilt_not_patched(
    built: Built, es_client
) -> None:
    """A live index whose chunks carry no audience would hide everything from a filtered query
    (and its strict mapping refuses the new field): the incremental run rebuilds instead."""
    alias = f"{built.alias}-legacy"
    legacy = version_index_name(alias, "00000000")
    body = build_index_body(
        IndexSpec(dims=built.embedder.dims, model_id=built.embedder.model_id), client=es_client
    )
    del body["mappings"]["properties"]["allowed_groups"]
    body["mappings"]["_meta"]["schema_version"] = 1
    es_client.indices.create(index=legacy, **body)
    es_client.indices.put_alias(index=legacy, name=alias, is_write_index=True)
    es_client.index(
        index=legacy, id="old", document={"chunk_id": "old", "text": "old"}, refresh=True
    )
    try:
        with duckdb.connect(str(built.settings.duckdb_path), read_only=True) as con:
            report = sync_index(
                es_client,
                con,
                alias=alias,
                model_id=built.embedder.model_id,
                dims=built.embedder.dims,
                mode="incremental",
            )
        assert report.mode == "rebuild" and report.previous_index == legacy
        assert report.reason == f"live index {legacy} predates access control (no allowed_groups)"
        assert (report.indexed, report.doc_count) == (219, 219)
        public = HybridRetriever(es_client, alias).search("salary bands", mode="bm25", k=10)
        assert public and not {h.doc_id for h in public} & set(CONFIDENTIAL)
    finally:
        drop_indices(es_client, alias)


def test_an_audience_change_resyncs_exactly_that_documents_chunks(built: Built, es_client) -> None:
    """sources.yaml edited: the disciplinary procedure is opened to security as well, and the
    expenses page is closed to finance. The next run changes those two documents' audience
    only: nothing re-chunked or re-embedded, exactly their chunks upserted, none deleted, and
    the next searches see the new audiences. (Last in this module: it changes the index.)"""
    opened, closed = "fs:confidential/hr/disciplinary-procedure.md", "fs:handbook/expenses.md"
    n_opened, n_closed = (
        len(_doc_chunks(built.settings, opened)),
        len(_doc_chunks(built.settings, closed)),
    )
    assert (n_opened, n_closed) == (6, 8)
    fs = built.sources.filesystem
    assert fs is not None
    edited = built.sources.model_copy(
        update={
            "filesystem": fs.model_copy(
                update={
                    "audiences": [
                        AudienceRule(glob="confidential/hr/disciplinary-*", groups=[HR, SECURITY]),
                        AudienceRule(glob="handbook/expenses.md", groups=["finance"]),
                        *fs.audiences,
                    ]
                }
            )
        }
    )
    before = asset_metadata(built.first, "search_index")
    second = materialize_groups(built.settings, edited)
    docs = asset_metadata(second, "documents")
    assert (docs["new"], docs["changed"], docs["audience_changed"], docs["deleted"]) == (0, 2, 2, 0)
    chunks = asset_metadata(second, "chunks")
    assert (chunks["docs_chunked"], chunks["chunks_added"], chunks["chunks_removed"]) == (0, 0, 0)
    assert asset_metadata(second, "embeddings")["embedded"] == 0
    index = asset_metadata(second, "search_index")
    assert index["mode"] == "incremental"
    assert (index["indexed"], index["deleted"]) == (n_opened + n_closed, 0) == (14, 0)
    assert index["unchanged"] == before["doc_count"] - 14 == 205
    assert index["doc_count"] == before["doc_count"]

    retriever = HybridRetriever(es_client, built.alias, built.embedder)
    title = _title(built.settings, opened)
    security = Principal("sam", frozenset({SECURITY}))
    assert retriever.search(title, mode="hybrid_rrf", k=5, principal=security)[0].doc_id == opened
    question = "How much may I claim for meals per day when travelling, and who approves £1,200?"
    for who in (None, security):
        hits = retriever.search(question, mode="hybrid_rrf", k=10, principal=who)
        assert closed not in {h.doc_id for h in hits}
    finance = Principal("fin", frozenset({"finance"}))
    assert (
        retriever.search(question, mode="hybrid_rrf", k=10, principal=finance)[0].doc_id == closed
    )

    # Nothing changed since: the sync compares text hash + audience and writes nothing.
    third = asset_metadata(materialize_groups(built.settings, edited), "search_index")
    assert (third["mode"], third["indexed"], third["deleted"]) == ("incremental", 0, 0)
