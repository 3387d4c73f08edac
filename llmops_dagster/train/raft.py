"""Document-grounded training examples drafted from the indexed chunks (the RAFT recipe).

Why: a few dozen hand-written questions cannot teach an adapter the corpus, and the evaluation
must measure learning, not memorising its own test. So questions are drafted from the chunks
the training audience may read, each answered by one sentence of its chunk (the references of
the golden set are one sentence too), and placed among retrieved distractors the way serving
places a question among its search hits: the adapter learns to find the sentence that answers
and to cite its chunk, on any corpus, with no labelled data (Zhang et al., "RAFT: Adapting
Language Model to Domain Specific RAG", 2024).

Drafting is deterministic (no model): a sentence that carries a specific fact (a number, a date,
a time, an amount) becomes an echo question with that span asked for ("The primary on-call
allowance is how much per full week?"); any other informative sentence becomes "What does
<document title> say about <its opening words>?". A 135M generator writes worse questions than
these templates; a capable endpoint could replace :func:`draft_question` later.

Two rules keep the evaluation honest, and their counts are reported:

- **Audience**: only chunks the ``reader`` (the training audience) may read are drafted from
  (the chunk's audience is its document's ``allowed_groups``, read from the warehouse), and
  distractors come from a search made *as* that reader (the filter runs in Elasticsearch);
  :func:`with_distractors` refuses a search result the reader may not read, so a search that
  lost its filter fails the run instead of leaking.
- **Golden overlap** (:class:`GoldenOverlapRule`): a drafted item restates a golden item when
  its question's content words overlap a golden question's by Jaccard ≥ 0.5, or its answer
  sentence scores token F1 ≥ 0.6 against a golden reference answer. Such candidates are
  dropped (and counted); the chunk's next sentence is tried instead.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llmops_dagster.access import PUBLIC, Principal, normalize_audience
from llmops_dagster.evaluate.scoring import normalize_answer
from llmops_dagster.qa import QAItem
from llmops_dagster.rag.extractive import split_sentences
from llmops_dagster.rag.hits import content_tokens
from llmops_dagster.train.dataset import ContextPassage

#: A drafted item's ``type`` (so reports and datasets can tell them from hand-written ones).
ITEM_TYPE = "drafted"
#: How a drafted item's id starts (the rest is a hash of its chunk and sentence).
ID_PREFIX = "raft-"
MIN_SENTENCE_WORDS = 6
MAX_SENTENCE_WORDS = 45
MIN_CONTENT_WORDS = 4

# A specific fact worth asking for, most specific first: (pattern, what the question asks in
# place of the match, or of its group ``n`` when it has one).
_SPANS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[£$€]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:million|bn|k))?"), "how much"),
    (re.compile(r"\b\d{1,2}:\d{2}\b"), "at what time"),
    (
        re.compile(
            r"\b\d{1,2}\s(?:January|February|March|April|May|June|July|August|September|"
            r"October|November|December)(?:\s\d{4})?\b"
        ),
        "on what date",
    ),
    (re.compile(r"(?<![\w\-–.])(?:19|20)\d{2}\b(?![\-–.]\d)"), "in what year"),
    (re.compile(r"(?<![\w\-.])\d+(?:\.\d+)?\s?%"), "what percentage"),
    # A quantity with its unit: only the number is asked for ("how many days of leave").
    (
        re.compile(
            r"(?<![\w\-.])(?P<n>\d[\d,]*(?:\.\d+)?)\s(?:business\s|working\s)?(?:days?|hours?|"
            r"minutes?|weeks?|months?|years?|seconds?|km|metres?|meters?|kg|grams?)\b"
        ),
        "how many",
    ),
    # Not a digit inside a name ("BP-7", "Tier 1", "S2", "7.3"): a quantity stands on its own.
    (re.compile(r"(?<![\w\-.])(?<!Tier )\d[\d,]*(?:\.\d+)?(?![\w\-–.]|\.\d)"), "how many"),
)
_LEAD_JOIN = re.compile(r"^(?:in|on|at)\s+what\s", re.IGNORECASE)
_PREPOSITIONS = ("in", "on", "at", "by", "from", "until", "before", "after")


class RaftError(ValueError):
    """Drafting cannot run (bad parameters, a search that ignores the audience); the message
    says why."""


@dataclass(frozen=True)
class ChunkRecord:
    """An indexed chunk as drafting sees it (with the audience it is indexed under)."""

    chunk_id: str
    doc_id: str
    title: str
    text: str
    audience: tuple[str, ...] = (PUBLIC,)


def read_chunk_records(con: Any) -> list[ChunkRecord]:
    """Every active chunk of the warehouse (``llmops.chunks``) with its document's title and
    audience (``llmops.documents.allowed_groups``, the same join the index sync writes), in
    document and position order; ``[]`` when nothing was chunked yet. ``con``: a
    :class:`~llmops_dagster.warehouse.Warehouse` or a connection it wraps."""
    # Imported here: the documents package pulls in dlt, which drafting needs only now.
    from llmops_dagster.chunks.chunk_table import CHUNKS_TABLE
    from llmops_dagster.documents.document_table import DOCUMENTS_TABLE
    from llmops_dagster.warehouse import PIPELINE_SCHEMA, as_warehouse

    con = as_warehouse(con)
    if not all(con.table_exists(PIPELINE_SCHEMA, t) for t in ("chunks", "documents")):
        return []
    # Active chunks with their document's title and audience (the join the index sync makes).
    sql = (
        f"SELECT c.chunk_id, c.doc_id, d.title, c.text, d.allowed_groups FROM {CHUNKS_TABLE} c "
        f"JOIN {DOCUMENTS_TABLE} d USING (doc_id) WHERE c.status = 'active' "
        "ORDER BY c.doc_id, c.position"
    )
    return [
        ChunkRecord(
            chunk_id=str(chunk_id),
            doc_id=str(doc_id),
            title=str(title or ""),
            text=str(text),
            audience=tuple(normalize_audience(groups)),
        )
        for chunk_id, doc_id, title, text, groups in con.fetchall(sql)
    ]


@dataclass(frozen=True)
class GoldenOverlapRule:
    """When a drafted item restates a golden one (see the module docstring)."""

    question_jaccard: float = 0.5
    answer_f1: float = 0.6

    def describe(self) -> str:
        return (
            f"question content-word Jaccard >= {self.question_jaccard:g} with a golden "
            f"question, or answer token F1 >= {self.answer_f1:g} with a golden reference"
        )


@dataclass(frozen=True)
class DraftedItem:
    """A drafted QA item, the chunk and sentence it was drafted from, and its context."""

    item: QAItem
    oracle: ContextPassage
    sentence: str
    template: str
    context: tuple[ContextPassage, ...] = ()


@dataclass
class DraftReport:
    """What drafting produced and what it left out (each count for a stated reason).

    ``candidates`` counts the items that passed every rule before ``max_items`` sampled
    ``items`` from them; ``readable`` is the set of chunk ids the reader may read (the only
    chunks a distractor may come from) and ``unreadable`` the others it saw."""

    items: list[DraftedItem]
    chunks_seen: int = 0
    dropped_audience: int = 0
    skipped_no_sentence: int = 0
    dropped_golden_question: int = 0
    dropped_golden_answer: int = 0
    dropped_duplicate: int = 0
    candidates: int = 0
    #: Items whose context holds fewer than ``k`` chunks (the search found too few distractors
    #: outside the item's own document).
    short_context: int = 0
    rule: GoldenOverlapRule = field(default_factory=GoldenOverlapRule)
    readable: frozenset[str] = frozenset()
    unreadable: frozenset[str] = frozenset()

    @property
    def dropped_golden_overlap(self) -> int:
        return self.dropped_golden_question + self.dropped_golden_answer

    def counts(self) -> dict[str, int]:
        return {
            "drafted": len(self.items),
            "candidates": self.candidates,
            "chunks_seen": self.chunks_seen,
            "dropped_audience": self.dropped_audience,
            "skipped_no_sentence": self.skipped_no_sentence,
            "dropped_golden_question": self.dropped_golden_question,
            "dropped_golden_answer": self.dropped_golden_answer,
            "dropped_golden_overlap": self.dropped_golden_overlap,
            "dropped_duplicate": self.dropped_duplicate,
            "short_context": self.short_context,
        }

    def digest(self) -> str:
        """Content digest of the drafted items and their contexts."""
        rows = [
            json.dumps(
                {
                    "item": d.item.to_record(),
                    "oracle": d.oracle.chunk_id,
                    "context": [c.chunk_id for c in d.context],
                },
                sort_keys=True,
            )
            for d in self.items
        ]
        return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()


def _words(text: str) -> list[str]:
    return text.split()


def informative_sentences(text: str) -> list[str]:
    """Sentences of a chunk that state something: not headings, not questions, neither too
    short nor too long to be one answer."""
    out = []
    for sentence in split_sentences(text):
        words = _words(sentence)
        if not MIN_SENTENCE_WORDS <= len(words) <= MAX_SENTENCE_WORDS:
            continue
        if sentence.rstrip().endswith("?"):
            continue
        if len(set(content_tokens(sentence))) < MIN_CONTENT_WORDS:
            continue
        out.append(sentence.strip())
    return out


def _fact_span(sentence: str) -> tuple[re.Match[str], str] | None:
    for pattern, asked in _SPANS:
        match = pattern.search(sentence)
        if match is not None and match.start() > 0:  # a sentence opening with it reads badly
            return match, asked
    return None


def _join(head: str, asked: str, tail: str) -> str:
    """``head asked tail`` with the spacing of prose: no space before , ; : ) or after (."""
    text = head
    for part in (asked, tail):
        if not part:
            continue
        if (
            text
            and not text.endswith(("(", "[", "“", '"'))
            and not part.startswith((",", ";", ":", ")", "]", ".", "!"))
        ):
            text += " "
        text += part
    return text


def draft_question(sentence: str, title: str) -> tuple[str, str]:
    """(question, template name) for one answer sentence; see the module docstring."""
    found = _fact_span(sentence)
    body = sentence.rstrip(" .!;:")
    if found is not None:
        match, asked = found
        start, end = match.span("n") if "n" in match.re.groupindex else match.span()
        head, tail = body[:start].rstrip(), body[end:].lstrip()
        # "... by 14:00 on ..." → "... by what time on ...": keep the preposition it had.
        words = head.split()
        if _LEAD_JOIN.match(asked) and words and words[-1].lower() in _PREPOSITIONS:
            asked = asked.split(" ", 1)[1]
        question = _join(head, asked, tail).rstrip(" ,;:") + "?"
        return question[0].upper() + question[1:], "fact_span"
    opening = " ".join(content_tokens(sentence)[:4])
    subject = title.strip() or "the document"
    return f"What does {subject} say about {opening}?", "about"


def _jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


class _GoldenRefs:
    """The golden references as bags of SQuAD-normalised tokens, made once: the answer rule
    is :func:`~llmops_dagster.evaluate.scoring.token_f1` against each, and re-normalising
    every reference for every candidate sentence cost seconds on the sample corpus."""

    def __init__(self, references: Iterable[str]) -> None:
        self.bags = [Counter(normalize_answer(r).split()) for r in references]
        self.bags = [bag for bag in self.bags if bag]

    def best_f1_at_least(self, sentence: str, threshold: float) -> bool:
        words = Counter(normalize_answer(sentence).split())
        n = sum(words.values())
        for bag in self.bags:
            overlap = sum((words & bag).values())
            if overlap:
                precision, recall = overlap / n, overlap / sum(bag.values())
                if 2 * precision * recall / (precision + recall) >= threshold:
                    return True
        return False


def _item_groups(audience: Sequence[str], reader: Principal) -> tuple[str, ...]:
    """The groups a drafted item's text came through: none for a public chunk, else the
    chunk's groups the reader is in (a chunk readable by ``hr`` or ``security``, read as
    ``hr``, is ``hr`` text: listing ``security`` too would hide it from that same reader)."""
    if PUBLIC in audience:
        return ()
    return tuple(sorted(set(audience) & reader.groups))


def draft_items(
    chunks: Iterable[ChunkRecord],
    *,
    reader: Principal | None = None,
    golden: Sequence[Any] = (),
    rule: GoldenOverlapRule | None = None,
    per_chunk: int = 1,
    max_items: int | None = None,
    seed: int = 13,
) -> DraftReport:
    """Draft up to ``per_chunk`` items per chunk the ``reader`` (None: public) may read.

    A chunk's informative sentences are tried facts first, then longer ones; a sentence
    whose item restates a golden one (``golden``: items with ``question`` and
    ``reference_answer``; :class:`GoldenOverlapRule`) or repeats an earlier question is
    counted and the next sentence tried. Items get stable ids (``raft-`` + a hash of chunk and
    sentence), ``relevant_doc_ids`` = the chunk's document, ``type`` :data:`ITEM_TYPE` and the
    groups the text came through (:func:`_item_groups`). ``max_items`` keeps a seeded sample
    spread over documents (0: none); items are returned in id order.
    """
    if per_chunk < 1:
        raise RaftError(f"per_chunk must be >= 1, not {per_chunk}")
    if max_items is not None and max_items < 0:
        raise RaftError(f"max_items must be >= 0, not {max_items}")
    who = reader or Principal.public()
    rule = rule or GoldenOverlapRule()
    golden_q = [set(content_tokens(g.question)) for g in golden]
    golden_refs = _GoldenRefs(str(g.reference_answer) for g in golden if g.reference_answer)
    report = DraftReport(items=[], rule=rule)
    readable: set[str] = set()
    unreadable: set[str] = set()
    seen_questions: set[str] = set()
    for chunk in chunks:
        report.chunks_seen += 1
        if not who.can_read(chunk.audience):
            report.dropped_audience += 1
            unreadable.add(chunk.chunk_id)
            continue
        readable.add(chunk.chunk_id)
        sentences = informative_sentences(chunk.text)
        if not sentences:
            report.skipped_no_sentence += 1
            continue
        # Facts first (the questions users ask), then the longer sentences.
        ranked = sorted(sentences, key=lambda s: (_fact_span(s) is None, -len(_words(s))))
        made = 0
        for sentence in ranked:
            if made == per_chunk:
                break
            question, template = draft_question(sentence, chunk.title)
            q_tokens = set(content_tokens(question))
            if any(_jaccard(q_tokens, g) >= rule.question_jaccard for g in golden_q):
                report.dropped_golden_question += 1
                continue
            if golden_refs.best_f1_at_least(sentence, rule.answer_f1):
                report.dropped_golden_answer += 1
                continue
            key = question.lower()
            if key in seen_questions:
                report.dropped_duplicate += 1
                continue
            seen_questions.add(key)
            made += 1
            digest = hashlib.sha256(f"{chunk.chunk_id}\x1f{sentence}".encode()).hexdigest()
            item = QAItem(
                id=f"{ID_PREFIX}{digest[:12]}",
                question=question,
                reference_answer=sentence,
                relevant_doc_ids=(chunk.doc_id,),
                type=ITEM_TYPE,
                groups=_item_groups(chunk.audience, who),
                extra={"template": template, "chunk_id": chunk.chunk_id},
            )
            oracle = ContextPassage(chunk.chunk_id, chunk.doc_id, chunk.text, chunk.title)
            report.items.append(DraftedItem(item, oracle, sentence, template))
    report.candidates = len(report.items)
    report.readable, report.unreadable = frozenset(readable), frozenset(unreadable)
    if max_items is not None and len(report.items) > max_items:
        report.items = spread_sample(report.items, max_items, seed)
    report.items.sort(key=lambda d: d.item.id)
    return report


T = TypeVar("T")


def spread_sample(
    items: list[T],
    n: int,
    seed: int,
    *,
    key: Callable[[T], tuple[str, str]] = lambda d: (d.oracle.doc_id, d.item.id),
) -> list[T]:
    """``n`` items, round-robin over documents in a seeded order: no document dominates.
    ``key``: an item's (document, unique id); the default reads a :class:`DraftedItem`."""
    rng = random.Random(seed)
    by_doc: dict[str, list[T]] = {}
    for drafted in sorted(items, key=lambda d: key(d)[1]):
        by_doc.setdefault(key(drafted)[0], []).append(drafted)
    docs = sorted(by_doc)
    rng.shuffle(docs)
    for doc in docs:
        rng.shuffle(by_doc[doc])
    picked: list[T] = []
    while len(picked) < n:
        for doc in docs:
            if by_doc[doc] and len(picked) < n:
                picked.append(by_doc[doc].pop())
    return picked


def drafted_qa_items(report: DraftReport) -> list[QAItem]:
    """The drafted QA items (id order)."""
    return [d.item for d in report.items]
