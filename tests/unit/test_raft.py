"""RAFT drafting (train/raft.py) and the training mix (train/mix.py) on the real sample
corpus: the chunks the pipeline makes of data/sample (the documents step's extraction, PII
redaction and audiences, then the project's chunker at the text resource's default sizes),
exact counts, the golden-overlap and audience
rules, determinism, and completions that cite the source chunk as serving asks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assets.model import FinetuneDatasetConfig
from llmops_dagster.access import Principal
from llmops_dagster.chunks.chunk_table import sync_chunks
from llmops_dagster.config import Settings
from llmops_dagster.documents.document_table import read_documents, sync_documents
from llmops_dagster.documents.normalize import NormalizedBatch, normalize_file_rows
from llmops_dagster.embed.model import load_tokenizer
from llmops_dagster.qa import QAItem, load_qa_jsonl, qa_digest, qa_file_digest
from llmops_dagster.rag.hits import content_tokens
from llmops_dagster.rag.prompts import load_prompt, parse_citations
from llmops_dagster.sources.source_config import default_sources_config
from llmops_dagster.text.chunking import chunk_document
from llmops_dagster.text.transform import make_text_transform
from llmops_dagster.train.dataset import (
    DEFAULT_TRAIN_QA,
    ContextPassage,
    DatasetError,
    build_example,
    build_sft_dataset,
)
from llmops_dagster.train.distractors import with_distractors
from llmops_dagster.train.mix import DEFAULT_DRAFTED_ITEMS, TrainingMix, build_training_mix
from llmops_dagster.train.raft import (
    ITEM_TYPE,
    ChunkRecord,
    DraftReport,
    RaftError,
    draft_items,
    draft_question,
    read_chunk_records,
)
from tests.support.stubs import ChatMLTokenizer

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden" / "qa.jsonl"
HR_DOCS = {"fs:confidential/hr/salary-bands.md", "fs:confidential/hr/disciplinary-procedure.md"}
SECURITY_DOCS = {
    "fs:confidential/security/incident-response-runbook.txt",
    "fs:confidential/security/red-team-findings-2026.md",
}
LEAVE = "fs:handbook/leave.md"
HR = Principal("hr-trainer", frozenset({"hr"}))


@dataclass(frozen=True)
class Corpus:
    batch: NormalizedBatch
    chunks: tuple[ChunkRecord, ...]
    chunker: Any


@pytest.fixture(scope="module")
def corpus(sample_dir: Path) -> Corpus:
    """The sample corpus as the chunks table holds it (what the warehouse would give drafting)."""
    rows = [
        {"relative_path": p.relative_to(sample_dir).as_posix(), "content": p.read_bytes()}
        for p in sorted(sample_dir.rglob("*"))
        if p.is_file()
    ]
    batch = normalize_file_rows(
        rows,
        transform=make_text_transform(redact_pii=True),
        audience=default_sources_config(sample_dir).filesystem.audience_for,  # type: ignore[union-attr]
    )
    tokenizer = load_tokenizer(Settings().models.embedding_model)

    def chunker(doc_id: str, text: str, fmt: str) -> list[Any]:
        return chunk_document(doc_id, text, tokenizer=tokenizer, fmt=fmt)  # default sizes

    chunks = tuple(
        ChunkRecord(c.chunk_id, c.doc_id, doc.title, c.text, doc.allowed_groups)
        for doc in batch.documents
        for c in chunker(doc.doc_id, doc.text, doc.format)
    )
    return Corpus(batch, chunks, chunker)


@pytest.fixture(scope="module")
def golden() -> list[QAItem]:
    return load_qa_jsonl(GOLDEN)


class MemorySearch:
    """An in-memory stand-in for the index: content-word overlap ranking; like Elasticsearch
    it applies the principal's audience filter before ranking, unless ``leaky`` (a search
    that lost its filter, to prove drafting refuses what it returns)."""

    def __init__(self, chunks: Sequence[ChunkRecord], *, depth: int = 20, leaky: bool = False):
        self.chunks = list(chunks)
        self.tokens = [set(content_tokens(f"{c.title} {c.text}")) for c in self.chunks]
        self.depth, self.leaky = depth, leaky
        self.asked_as: list[Principal] = []

    def __call__(self, questions: Sequence[str], who: Principal) -> list[list[ContextPassage]]:
        self.asked_as.append(who)
        out = []
        for question in questions:
            words = set(content_tokens(question))
            scored = [
                (len(words & tokens), i)
                for i, (chunk, tokens) in enumerate(zip(self.chunks, self.tokens, strict=True))
                if self.leaky or who.can_read(chunk.audience)
            ]
            scored.sort(key=lambda t: (-t[0], t[1]))
            out.append(
                [
                    ContextPassage(c.chunk_id, c.doc_id, c.text, c.title, float(score))
                    for score, i in scored[: self.depth]
                    for c in (self.chunks[i],)
                ]
            )
        return out


def _by_id(chunks: Sequence[ChunkRecord]) -> dict[str, ChunkRecord]:
    return {c.chunk_id: c for c in chunks}


def test_the_sample_corpus_chunks_as_drafting_reads_them(corpus: Corpus) -> None:
    audiences = Counter(c.audience for c in corpus.chunks)
    assert len(corpus.batch.documents) == 51 and not corpus.batch.rejected
    assert audiences == {("public",): 199, ("hr",): 12, ("security",): 8}


def test_the_drafter_makes_one_item_per_readable_chunk_less_golden_restatements(
    corpus: Corpus, golden: list[QAItem]
) -> None:
    """219 chunks: 20 confidential ones are never read as public; of the 199 public ones each
    yields one item, its next sentence tried when one restates a golden item (6 by question, 64
    by answer) or repeats an earlier question (4); five chunks run out of sentences."""
    without = draft_items(corpus.chunks)
    assert without.counts() == {
        "drafted": 199,
        "candidates": 199,
        "chunks_seen": 219,
        "dropped_audience": 20,
        "skipped_no_sentence": 0,
        "dropped_golden_question": 0,
        "dropped_golden_answer": 0,
        "dropped_golden_overlap": 0,
        "dropped_duplicate": 2,
        "short_context": 0,
    }
    report = draft_items(corpus.chunks, golden=golden)
    assert report.counts() == {
        "drafted": 194,
        "candidates": 194,
        "chunks_seen": 219,
        "dropped_audience": 20,
        "skipped_no_sentence": 0,
        "dropped_golden_question": 6,
        "dropped_golden_answer": 64,
        "dropped_golden_overlap": 70,
        "dropped_duplicate": 4,
        "short_context": 0,
    }
    chunks = _by_id(corpus.chunks)
    for drafted in report.items:
        item = drafted.item
        assert item.type == ITEM_TYPE and item.id.startswith("raft-")
        assert item.relevant_doc_ids == (drafted.oracle.doc_id,)
        assert item.reference_answer == drafted.sentence
        # The sentence is the chunk's (a table row reads as "cell: cell, cell").
        words = set(content_tokens(chunks[drafted.oracle.chunk_id].text))
        assert set(content_tokens(drafted.sentence)) <= words
        assert item.groups == ()
    assert len({d.item.id for d in report.items}) == 194
    assert len({d.item.question.lower() for d in report.items}) == 194


def test_questions_ask_for_the_fact_their_sentence_states() -> None:
    assert draft_question("A pilot shift may not exceed 8 hours, with a break.", "Flight") == (
        "A pilot shift may not exceed how many hours, with a break?",
        "fact_span",
    )
    assert draft_question("Claims over £500 need a director's approval.", "Expenses") == (
        "Claims over how much need a director's approval?",
        "fact_span",
    )
    assert draft_question("Every Thursday at 11:00, the rotations meet.", "On-Call") == (
        "Every Thursday at what time, the rotations meet?",
        "fact_span",
    )
    assert draft_question("The leave year runs from 1 January to 31 December.", "Leave") == (
        "The leave year runs from what date to 31 December?",
        "fact_span",
    )
    assert draft_question("Run the smoke queries (20 saved queries) first.", "Reindex") == (
        "Run the smoke queries (how many saved queries) first?",
        "fact_span",
    )
    assert draft_question("Leave cannot be exchanged for pay at all.", "Leave and Time Off") == (
        "What does Leave and Time Off say about leave cannot exchanged pay?",
        "about",
    )


def test_an_item_restating_a_golden_question_or_answer_is_dropped_and_counted(
    corpus: Corpus,
) -> None:
    """The first chunk of leave.md drafts "After how many years of service ..."; a golden item
    asking that (question Jaccard 1.0) drops it, and so does one whose reference is its answer
    sentence in other words (token F1 ≥ 0.6); each time the chunk's next sentence is drafted."""
    leave = [c for c in corpus.chunks if c.doc_id == LEAVE]
    first = leave[0]
    (base,) = [d for d in draft_items(leave).items if d.oracle.chunk_id == first.chunk_id]
    assert base.item.question == (
        "After how many years of service you receive one extra day, and after 5 years a second "
        "extra day (29 days in total)?"
    )
    asks_it = QAItem("g1", base.item.question, reference_answer="Unrelated words entirely.")
    by_question = draft_items(leave, golden=[asks_it])
    assert (by_question.dropped_golden_question, by_question.dropped_golden_answer) == (1, 0)
    assert base.item.id not in {d.item.id for d in by_question.items}
    (instead,) = [d for d in by_question.items if d.oracle.chunk_id == first.chunk_id]
    assert instead.item.question == (
        "Everyone receives how many days of annual leave per year plus UK bank holidays?"
    )
    assert len(by_question.items) == len(leave) == 6

    paraphrase = QAItem(
        "g2",
        "When does an employee get an additional day off?",
        reference_answer="After 3 years of service you get one extra day, and a second one "
        "after 5 years.",
    )
    by_answer = draft_items(leave, golden=[paraphrase])
    assert (by_answer.dropped_golden_question, by_answer.dropped_golden_answer) == (0, 1)
    assert base.item.id not in {d.item.id for d in by_answer.items}
    assert by_answer.dropped_golden_overlap == 1 and len(by_answer.items) == 6


def test_chunks_outside_the_readers_groups_are_never_drafted_from(corpus: Corpus) -> None:
    public = draft_items(corpus.chunks)
    assert not {d.oracle.doc_id for d in public.items} & (HR_DOCS | SECURITY_DOCS)
    assert public.dropped_audience == 20 and len(public.unreadable) == 20

    hr = draft_items(corpus.chunks, reader=HR)
    assert hr.dropped_audience == 8  # the security chunks
    hr_items = [d for d in hr.items if d.oracle.doc_id in HR_DOCS]
    assert len(hr_items) == 12 and len(hr.items) == 199 + 12
    assert all(d.item.groups == ("hr",) for d in hr_items)
    assert not {d.oracle.doc_id for d in hr.items} & SECURITY_DOCS


def test_distractors_come_from_a_search_as_the_reader_and_other_documents_only(
    corpus: Corpus,
) -> None:
    search = MemorySearch(corpus.chunks)
    report = with_distractors(draft_items(corpus.chunks, reader=HR), search, k=3, reader=HR)
    assert search.asked_as == [HR]  # one batch, as the reader
    confidential = {c.chunk_id for c in corpus.chunks if c.doc_id in SECURITY_DOCS}
    for drafted in report.items:
        ids = [c.chunk_id for c in drafted.context]
        assert len(ids) == 3 and ids.count(drafted.oracle.chunk_id) == 1
        others = [c for c in drafted.context if c.chunk_id != drafted.oracle.chunk_id]
        assert all(c.doc_id != drafted.oracle.doc_id for c in others)
        assert not set(ids) & confidential
    positions = Counter(
        [c.chunk_id for c in d.context].index(d.oracle.chunk_id) for d in report.items
    )
    assert set(positions) == {0, 1, 2}  # the oracle is not always first

    # A search too shallow to find k - 1 chunks of other documents leaves short contexts,
    # and says how many.
    shallow = with_distractors(
        draft_items(corpus.chunks), MemorySearch(corpus.chunks, depth=1), k=3
    )
    assert shallow.short_context == len(shallow.items) == 199
    assert max(len(d.context) for d in shallow.items) == 2


def test_a_search_that_returns_what_the_reader_may_not_read_is_refused(corpus: Corpus) -> None:
    """The audience filter belongs to the search; drafting checks its results against the
    audiences it read from the warehouse and fails rather than train on a leak."""
    report = draft_items(corpus.chunks)
    with pytest.raises(RaftError, match=r"may not read .* must filter by the principal"):
        with_distractors(report, MemorySearch(corpus.chunks, depth=219, leaky=True), k=3)


def test_drafting_is_deterministic_for_a_seed(corpus: Corpus, golden: list[QAItem]) -> None:
    def run(seed: int) -> DraftReport:
        report = draft_items(corpus.chunks, golden=golden, max_items=10, seed=seed)
        return with_distractors(report, MemorySearch(corpus.chunks), k=3, seed=seed)

    first, again, other = run(13), run(13), run(14)
    assert first.digest() == again.digest()
    assert [d.context for d in first.items] == [d.context for d in again.items]
    assert len(first.items) == 10 and first.candidates == 194
    assert len({d.oracle.doc_id for d in first.items}) == 10  # spread: one per document
    assert {d.item.id for d in other.items} != {d.item.id for d in first.items}
    assert other.digest() != first.digest()


def test_the_completion_answers_with_the_sentence_and_cites_the_source_chunk(
    corpus: Corpus,
) -> None:
    report = with_distractors(draft_items(corpus.chunks), MemorySearch(corpus.chunks), k=3)
    assert report.short_context == 0
    prompt = load_prompt()
    for drafted in report.items:
        example = build_example(
            drafted.item, tokenizer=ChatMLTokenizer(), prompt=prompt, context=drafted.context
        )
        oracle = drafted.oracle.chunk_id
        assert example.completion == f"{drafted.sentence} [chunk:{oracle}]<|im_end|>\n"
        assert example.cited_chunk_ids == (oracle,)
        # Read back the way serving reads an answer's citations.
        assert parse_citations(example.completion, example.context_chunk_ids) == [oracle]
        assert f'<chunk id="{oracle}">' in example.prompt
        assert example.prompt.count('<chunk id="') == 1 + 3  # the system text shows one


def test_the_warehouse_gives_drafting_every_active_chunk_with_its_audience(
    corpus: Corpus, warehouse
) -> None:
    assert read_chunk_records(warehouse) == []  # nothing ingested yet: nothing to draft
    sync_documents(warehouse, corpus.batch)
    documents = read_documents(warehouse).select(["doc_id", "content_hash", "text", "format"])
    sync_chunks(warehouse, documents, corpus.chunker, fingerprint="test")
    records = read_chunk_records(warehouse)
    assert sorted(records, key=lambda c: c.chunk_id) == sorted(
        corpus.chunks, key=lambda c: c.chunk_id
    )
    # In document and position order, as the chunker numbered them.
    assert [c for c in records if c.doc_id == LEAVE] == [
        c for c in corpus.chunks if c.doc_id == LEAVE
    ]


# --------------------------------------------------------------------------------------------
# The mix: hand-written items + drafted ones → one SFT dataset (train/mix.py)
# --------------------------------------------------------------------------------------------


def _no_context(item: QAItem) -> list[ContextPassage]:
    return []


def _mix(corpus: Corpus, golden: list[QAItem], **kwargs: Any) -> TrainingMix:
    options: dict[str, Any] = {
        "tokenizer": ChatMLTokenizer(),
        "chunks": corpus.chunks,
        "golden": golden,
        "search": MemorySearch(corpus.chunks),
        "drafted_items": 8,
        "fallback_context": _no_context,
        **kwargs,
    }
    handwritten = options.pop("handwritten", DEFAULT_TRAIN_QA)
    return build_training_mix(handwritten, **options)


def test_the_mix_is_the_handwritten_set_plus_the_drafted_sample_split_with_the_seed(
    corpus: Corpus, golden: list[QAItem]
) -> None:
    mix = _mix(corpus, golden)
    meta = mix.metadata()
    assert {k: meta[k] for k in meta if k.startswith("n_")} == {
        "n_train": 54,
        "n_validation": 14,  # 20% of 68
        "n_dropped_audience": 0,
        "n_handwritten": 60,
        "n_drafted": 8,
        "n_validation_drafted": 3,
        "n_drafted_candidates": 194,
        "n_chunks_seen": 219,
        "n_chunks_dropped_audience": 20,
        "n_chunks_no_sentence": 0,
        "n_dropped_golden_overlap": 70,
        "n_dropped_golden_question": 6,
        "n_dropped_golden_answer": 64,
        "n_dropped_duplicate": 4,
        "n_drafted_short_context": 0,
    }
    assert (meta["drafted_items"], meta["drafted_seed"]) == (8, 13)
    assert meta["golden_digest"] == qa_digest(golden)
    assert meta["handwritten_digest"] == qa_file_digest(DEFAULT_TRAIN_QA)
    assert meta["source_digest"] == meta["mix_digest"] == qa_digest(mix.items)
    assert meta["mix_digest"] != meta["handwritten_digest"]
    assert meta["source"] == f"{DEFAULT_TRAIN_QA} + 8 drafted (raft)"
    drafted = {d.item.id: d for d in mix.drafts.items}
    examples = [e for e in mix.dataset.train + mix.dataset.validation if e.id in drafted]
    assert len(examples) == 8
    for example in examples:
        oracle = drafted[example.id].oracle.chunk_id
        assert example.cited_chunk_ids == (oracle,) and len(example.context_chunk_ids) == 3

    again = _mix(corpus, golden)
    assert again.dataset.digest == mix.dataset.digest
    assert again.dataset.canonical_jsonl() == mix.dataset.canonical_jsonl()
    assert _mix(corpus, golden, drafted_seed=14).dataset.digest != mix.dataset.digest
    assert _mix(corpus, golden, seed=14).dataset.digest != mix.dataset.digest


def test_without_drafting_the_mix_is_the_handwritten_dataset(
    corpus: Corpus, golden: list[QAItem]
) -> None:
    mix = _mix(corpus, golden, drafted_items=0, search=None)
    alone = build_sft_dataset(DEFAULT_TRAIN_QA, tokenizer=ChatMLTokenizer(), context_fn=_no_context)
    assert mix.dataset.digest == alone.digest
    assert (mix.metadata()["n_drafted"], mix.metadata()["n_chunks_seen"]) == (0, 0)


def test_the_audience_rules_hold_in_the_mix(
    corpus: Corpus, golden: list[QAItem], tmp_path: Path
) -> None:
    """Public training: a hand-written hr item is left out and counted, nothing is drafted from
    a confidential chunk. hr training: the item stays and hr chunks may be drafted from."""
    rows = [item.to_line() for item in load_qa_jsonl(DEFAULT_TRAIN_QA)[:4]]
    rows.append(
        QAItem(
            "fb-hr",
            "What is the salary range of band P4?",
            reference_answer="£68,500 to £84,000.",
            relevant_doc_ids=("fs:confidential/hr/salary-bands.md",),
            groups=("hr",),
        ).to_line()
    )
    qa = tmp_path / "train.jsonl"
    qa.write_text("\n".join(rows) + "\n")
    search = MemorySearch(corpus.chunks)
    public = _mix(corpus, golden, handwritten=qa, drafted_items=200, search=search)
    meta = public.metadata()
    assert (meta["n_dropped_audience"], meta["n_handwritten"], meta["n_drafted"]) == (1, 4, 194)
    assert meta["n_train"] + meta["n_validation"] == 4 + 194
    text = public.dataset.canonical_jsonl()
    assert "fb-hr" not in text and "68,500" not in text and "Magpie" not in text
    # The QA file of the mix holds what entered the dataset, not the hr item it left out.
    written = public.write_qa_jsonl(tmp_path / "qa-mix.jsonl")
    assert "fb-hr" not in written.read_text() and len(public.items) == 4 + 194
    assert qa_digest(load_qa_jsonl(written)) == meta["mix_digest"] != meta["source_digest"]
    assert search.asked_as == [Principal.public()]

    hr = _mix(corpus, golden, handwritten=qa, drafted_items=250, audience=HR)
    meta = hr.metadata()
    assert (meta["n_dropped_audience"], meta["n_handwritten"], meta["n_drafted"]) == (0, 5, 206)
    assert meta["n_chunks_dropped_audience"] == 8
    hr_drafted = [d for d in hr.drafts.items if d.oracle.doc_id in HR_DOCS]
    assert hr_drafted and all(d.item.groups == ("hr",) for d in hr_drafted)
    assert "Magpie" not in hr.dataset.canonical_jsonl()


def test_the_mix_refuses_bad_settings_by_name(corpus: Corpus, golden: list[QAItem]) -> None:
    with pytest.raises(RaftError, match="drafted_items must be >= 0, not -1"):
        _mix(corpus, golden, drafted_items=-1)
    with pytest.raises(RaftError, match=r"reader groups \['hr'\] are beyond the training"):
        _mix(corpus, golden, reader=HR)
    with pytest.raises(RaftError, match="needs a search"):
        _mix(corpus, golden, search=None)
    clash = [*load_qa_jsonl(DEFAULT_TRAIN_QA)[:3]]
    first = _mix(corpus, golden).drafts.items[0].item
    with pytest.raises(DatasetError, match="collide with drafted items"):
        _mix(corpus, golden, handwritten=[*clash, QAItem(first.id, "Q?", reference_answer="A.")])
    with pytest.raises(ValueError, match="drafted_items"):
        FinetuneDatasetConfig(drafted_items=-1)
    assert FinetuneDatasetConfig().drafted_items == DEFAULT_DRAFTED_ITEMS == 120


def test_the_mixed_qa_file_has_the_mix_digest(
    corpus: Corpus, golden: list[QAItem], tmp_path: Path
) -> None:
    mix = _mix(corpus, golden)
    path = mix.write_qa_jsonl(tmp_path / "qa-mix.jsonl")
    items = load_qa_jsonl(path, require_reference_answer=True)
    assert len(items) == 68 and qa_digest(items) == mix.metadata()["mix_digest"]
    drafted = [i for i in items if i.type == ITEM_TYPE]
    assert len(drafted) == 8
    assert all(set(i.extra) == {"template", "chunk_id"} for i in drafted)
