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

- **Audience**: only chunks the training ``reader`` may read are drafted from, and distractors
  come from a search made *as* that reader (the filter runs in Elasticsearch).
- **Golden overlap** (:class:`GoldenOverlapRule`): a drafted item restates a golden item when
  its question's content words overlap a golden question's by Jaccard ≥ 0.5, or its answer
  sentence scores token F1 ≥ 0.6 against a golden reference answer. Such items are dropped.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llmops_dagster.access import Principal
from llmops_dagster.evaluate.metrics import token_f1
from llmops_dagster.rag.extractive import split_sentences
from llmops_dagster.rag.hits import HitLike, content_tokens
from llmops_dagster.train.dataset import ContextPassage, QAItem

#: What a drafted item's ``type`` says (so reports and datasets can tell them from feedback).
ITEM_TYPE = "drafted"
MIN_SENTENCE_WORDS = 6
MAX_SENTENCE_WORDS = 45
MIN_CONTENT_WORDS = 4

# A specific fact worth asking for, most specific first: (pattern, what the question asks).
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
    (re.compile(r"(?<![\w\-–])(?:19|20)\d{2}\b(?![\-–]\d)"), "in what year"),
    (re.compile(r"(?<![\w\-])\d+(?:\.\d+)?\s?%"), "what percentage"),
    (
        re.compile(
            r"(?<![\w\-])\d[\d,]*(?:\.\d+)?\s(?:business\s)?(?:days?|hours?|minutes?|weeks?|months?|"
            r"years?|seconds?|km|metres?|meters?|kg|grams?)\b"
        ),
        "how long (or how much)",
    ),
    # Not a digit inside a name ("BP-7", "Tier 1", "S2"): a quantity stands on its own.
    (re.compile(r"(?<![\w\-])(?<!Tier )\d[\d,]*\b(?![\-–]\w)"), "how many"),
)
_LEAD_JOIN = re.compile(r"^(?:in|on|at)\s+what\s", re.IGNORECASE)


class RaftError(ValueError):
    """Drafting cannot run (nothing readable, bad parameters); the message says why."""


@dataclass(frozen=True)
class ChunkRecord:
    """An indexed chunk as drafting sees it (with the audience it is indexed under)."""

    chunk_id: str
    doc_id: str
    title: str
    text: str
    audience: tuple[str, ...] = ("public",)


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
    """What drafting produced and what it left out (each count for a stated reason)."""

    items: list[DraftedItem]
    chunks_seen: int = 0
    dropped_audience: int = 0
    skipped_no_sentence: int = 0
    dropped_golden_question: int = 0
    dropped_golden_answer: int = 0
    dropped_duplicate: int = 0
    rule: GoldenOverlapRule = field(default_factory=GoldenOverlapRule)

    def counts(self) -> dict[str, int]:
        return {
            "drafted": len(self.items),
            "chunks_seen": self.chunks_seen,
            "dropped_audience": self.dropped_audience,
            "skipped_no_sentence": self.skipped_no_sentence,
            "dropped_golden_question": self.dropped_golden_question,
            "dropped_golden_answer": self.dropped_golden_answer,
            "dropped_duplicate": self.dropped_duplicate,
        }

    def digest(self) -> str:
        """Content digest of the drafted items and their contexts (the dataset's version)."""
        rows = [
            json.dumps(
                {
                    "item": asdict(d.item),
                    "oracle": d.oracle.chunk_id,
                    "context": [c.chunk_id for c in d.context],
                },
                sort_keys=True,
                default=list,
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
        if sentence.rstrip().endswith("?") or len(set(content_tokens(sentence))) < 4:
            continue
        out.append(sentence.strip())
    return out


def _fact_span(sentence: str) -> tuple[re.Match[str], str] | None:
    for pattern, asked in _SPANS:
        match = pattern.search(sentence)
        if match is not None and match.start() > 0:  # a sentence opening with it reads badly
            return match, asked
    return None


def draft_question(sentence: str, title: str) -> tuple[str, str]:
    """(question, template name) for one answer sentence; see the module docstring."""
    found = _fact_span(sentence)
    body = sentence.rstrip(" .!;:")
    if found is not None:
        match, asked = found
        asked = asked.split(" (")[0]
        start, end = match.span()
        head, tail = body[:start].rstrip(), body[end:].lstrip()
        # "... by 14:00 on ..." → "... by what time on ...": keep the preposition it had.
        if (
            _LEAD_JOIN.match(asked)
            and head.split()
            and head.split()[-1].lower()
            in (
                "in",
                "on",
                "at",
                "by",
                "from",
                "until",
                "before",
                "after",
            )
        ):
            asked = asked.split(" ", 1)[1]
        question = " ".join(p for p in (head, asked, tail) if p).rstrip(" ,;:") + "?"
        return question[0].upper() + question[1:], "fact_span"
    opening = " ".join(content_tokens(sentence)[:4])
    subject = title.strip() or "the document"
    return f"What does {subject} say about {opening}?", "about"


def _jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


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

    ``golden``: items with ``question`` and ``reference_answer`` (the golden set) to keep out
    (:class:`GoldenOverlapRule`). Items get stable ids (``raft-`` + a hash of chunk and
    sentence), ``relevant_doc_ids`` = the chunk's document, and the chunk's audience as
    ``groups``. ``max_items`` keeps a seeded sample spread over documents.
    """
    if per_chunk < 1:
        raise RaftError(f"per_chunk must be >= 1, not {per_chunk}")
    who = reader or Principal.public()
    rule = rule or GoldenOverlapRule()
    golden_q = [set(content_tokens(g.question)) for g in golden]
    golden_refs = [str(g.reference_answer) for g in golden]
    report = DraftReport(items=[], rule=rule)
    seen_questions: set[str] = set()
    for chunk in chunks:
        report.chunks_seen += 1
        if not who.can_read(list(chunk.audience)):
            report.dropped_audience += 1
            continue
        sentences = informative_sentences(chunk.text)
        if not sentences:
            report.skipped_no_sentence += 1
            continue
        # Facts first (the questions users ask), then the longer sentences.
        ranked = sorted(sentences, key=lambda s: (_fact_span(s) is None, -len(_words(s))))
        for sentence in ranked[:per_chunk]:
            question, template = draft_question(sentence, chunk.title)
            q_tokens = set(content_tokens(question))
            if any(_jaccard(q_tokens, g) >= rule.question_jaccard for g in golden_q):
                report.dropped_golden_question += 1
                continue
            if any(token_f1(sentence, ref) >= rule.answer_f1 for ref in golden_refs):
                report.dropped_golden_answer += 1
                continue
            key = question.lower()
            if key in seen_questions:
                report.dropped_duplicate += 1
                continue
            seen_questions.add(key)
            digest = hashlib.sha256(f"{chunk.chunk_id}\x1f{sentence}".encode()).hexdigest()
            item = QAItem(
                id=f"raft-{digest[:12]}",
                question=question,
                reference_answer=sentence,
                relevant_doc_ids=(chunk.doc_id,),
                extra={"type": ITEM_TYPE, "template": template, "chunk_id": chunk.chunk_id},
                groups=tuple(sorted(set(chunk.audience) - {"public"})),
            )
            oracle = ContextPassage(chunk.chunk_id, chunk.doc_id, chunk.text, chunk.title)
            report.items.append(DraftedItem(item, oracle, sentence, template))
    if max_items is not None and len(report.items) > max_items:
        report.items = _spread_sample(report.items, max_items, seed)
    report.items.sort(key=lambda d: d.item.id)
    return report


def _spread_sample(items: list[DraftedItem], n: int, seed: int) -> list[DraftedItem]:
    """``n`` items, round-robin over documents in a seeded order: no document dominates."""
    rng = random.Random(seed)
    by_doc: dict[str, list[DraftedItem]] = {}
    for drafted in sorted(items, key=lambda d: d.item.id):
        by_doc.setdefault(drafted.oracle.doc_id, []).append(drafted)
    docs = sorted(by_doc)
    rng.shuffle(docs)
    for doc in docs:
        rng.shuffle(by_doc[doc])
    picked: list[DraftedItem] = []
    while len(picked) < n:
        for doc in docs:
            if by_doc[doc] and len(picked) < n:
                picked.append(by_doc[doc].pop())
    return picked


SearchFn = Callable[[str, Principal], Sequence[HitLike]]


def with_distractors(
    report: DraftReport,
    search: SearchFn,
    *,
    k: int,
    reader: Principal | None = None,
    seed: int = 13,
) -> DraftReport:
    """Each item's context: its oracle chunk among ``k - 1`` distractors that a search for the
    question returns as ``reader`` (chunks of other documents only: another chunk of the same
    document could hold the answer too), the oracle at a seeded position — the prompt serving
    builds, with the answer's chunk somewhere in it."""
    if k < 1:
        raise RaftError(f"k must be >= 1, not {k}")
    who = reader or Principal.public()
    rng = random.Random(seed)
    out: list[DraftedItem] = []
    for drafted in report.items:
        hits = search(drafted.item.question, who)
        distractors = [
            ContextPassage(h.chunk_id, h.doc_id, h.text, h.title or "", float(h.score))
            for h in hits
            if h.doc_id != drafted.oracle.doc_id
        ][: k - 1]
        context = list(distractors)
        context.insert(rng.randint(0, len(context)), drafted.oracle)
        out.append(
            DraftedItem(
                drafted.item, drafted.oracle, drafted.sentence, drafted.template, tuple(context)
            )
        )
    report.items = out
    return report


def context_fn(
    report: DraftReport, fallback: Callable[[QAItem], Sequence[HitLike]] | None = None
) -> Callable[[QAItem], Sequence[HitLike]]:
    """The drafted contexts by item id, for ``build_sft_dataset(context_fn=...)``; an item not
    drafted here (reviewed feedback) gets ``fallback``'s context when given, else none."""
    by_id = {d.item.id: list(d.context) for d in report.items}

    def context(item: QAItem) -> Sequence[HitLike]:
        if item.id in by_id:
            return by_id[item.id]
        return list(fallback(item)) if fallback is not None else []

    return context
