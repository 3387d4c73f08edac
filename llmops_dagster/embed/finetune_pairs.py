"""Training pairs for the embedding model, drawn from the indexed corpus itself (no labelled
queries): the inverse-cloze task (ICT; Lee et al., "Latent Retrieval for Weakly Supervised Open
Domain Question Answering", 2019), with a BM25 hard negative when the recipe trains on one.

Why this recipe: the corpus has no queries, but each of its sentences is a short text about its
chunk, like a query; learning to find the chunk a sentence was taken from teaches the model the
corpus's vocabulary and what belongs together. Per pair:

- **query**: one informative sentence of a chunk (:func:`~llmops_dagster.train.raft.
  informative_sentences`, the RAFT drafter's rule: 6–45 words, at least 4 content words, not a
  question or heading; a chunk with none is skipped and counted), chosen by seed;
- **positive**: the chunk with that sentence removed, so the model must match on meaning rather
  than on the copied words. In a seeded share (:data:`KEEP_SENTENCE_SHARE`, 10% as in the ICT
  paper) the sentence is kept, so the model does not learn that a query never appears in its
  passage. A chunk that is that one sentence has no positive left and is skipped (counted);
- **negative**, only when asked (``negatives=True``; the asset asks when its recipe trains
  against it, ``EmbedRecipe.hard_negative``, off by default): the best BM25 hit for the query
  from ANOTHER document: looks like the answer, is not (a chunk of the same document might
  well be a right answer too). A query whose search finds none is dropped (counted). Without
  it no search runs (one per chunk otherwise) and the pair's negative fields are empty, so the
  data digest covers exactly what the trainer reads.

The same two rules as RAFT drafting keep it honest, with counts: only chunks the training
reader may read become a query, a positive or a negative (a BM25 hit the reader may not read
means the search lost its audience filter and raises), and a query restating a golden item
(:class:`~llmops_dagster.train.raft.GoldenOverlapRule`, the question *and* the answer rule: the
held-out sentence plays both parts) is dropped and the chunk's next sentence tried.

``max_pairs`` keeps a seeded sample spread over documents; the whole build is deterministic
for a seed. ``shuffled=True`` pairs each query with another query's positive — a model made
worse on purpose, which the evaluation must refuse.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmops_dagster.access import Principal
from llmops_dagster.rag.extractive import split_sentences
from llmops_dagster.rag.hits import content_tokens
from llmops_dagster.train.raft import (
    ChunkRecord,
    GoldenOverlapRule,
    _GoldenRefs,
    _jaccard,
    informative_sentences,
    spread_sample,
)

#: Share of pairs whose positive keeps the query sentence (ICT's 10%).
KEEP_SENTENCE_SHARE = 0.1
#: BM25 hits looked at for a negative (same-document hits are skipped; the sample corpus's
#: longest document has 12 chunks).
NEGATIVE_DEPTH = 20

#: ``bm25(query, k)`` → hits best first as (chunk_id, doc_id, text), filtered by the reader's
#: audience in the search itself (the asset passes the index's BM25 as the training reader).
BM25Fn = Callable[[str, int], Sequence[tuple[str, str, str]]]


class PairsError(ValueError):
    """Pairs cannot be built (bad parameters, a search that ignores the audience)."""


@dataclass(frozen=True)
class TrainingPair:
    """One (anchor, positive[, negative]) example and where each part came from; the negative
    fields are empty when the pairs were built without negatives."""

    query: str
    positive: str
    negative: str
    chunk_id: str
    doc_id: str
    negative_chunk_id: str
    negative_doc_id: str
    kept_sentence: bool = False

    @property
    def pair_id(self) -> str:
        return hashlib.sha256(f"{self.chunk_id}\x1f{self.query}".encode()).hexdigest()[:16]

    def to_record(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "positive": self.positive,
            "negative": self.negative,
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "negative_chunk_id": self.negative_chunk_id,
            "negative_doc_id": self.negative_doc_id,
            "kept_sentence": self.kept_sentence,
        }


@dataclass
class PairsReport:
    """The pairs and what was left out, each count for a stated reason."""

    pairs: list[TrainingPair]
    chunks_seen: int = 0
    dropped_audience: int = 0
    skipped_no_sentence: int = 0
    skipped_single_sentence: int = 0
    dropped_golden_question: int = 0
    dropped_golden_answer: int = 0
    #: Chunks left without a pair because every sentence restated a golden item.
    skipped_all_golden: int = 0
    dropped_no_negative: int = 0
    candidates: int = 0
    #: Whether each pair carries a BM25 hard negative (``build_pairs(negatives=...)``).
    negatives: bool = True
    shuffled: bool = False
    seed: int = 13
    rule: GoldenOverlapRule = field(default_factory=GoldenOverlapRule)

    @property
    def dropped_golden(self) -> int:
        return self.dropped_golden_question + self.dropped_golden_answer

    @property
    def kept_sentence(self) -> int:
        return sum(p.kept_sentence for p in self.pairs)

    def counts(self) -> dict[str, int]:
        return {
            "pairs": len(self.pairs),
            "candidates": self.candidates,
            "chunks_seen": self.chunks_seen,
            "dropped_audience": self.dropped_audience,
            "skipped_no_sentence": self.skipped_no_sentence,
            "skipped_single_sentence": self.skipped_single_sentence,
            "dropped_golden_question": self.dropped_golden_question,
            "dropped_golden_answer": self.dropped_golden_answer,
            "dropped_golden": self.dropped_golden,
            "skipped_all_golden": self.skipped_all_golden,
            "dropped_no_negative": self.dropped_no_negative,
            "kept_sentence": self.kept_sentence,
        }

    def digest(self) -> str:
        """sha256 of the canonical JSONL of the pairs (sorted keys, pair order): the training
        data's version (two builds with the same digest train on the same pairs)."""
        rows = [
            json.dumps(p.to_record(), sort_keys=True, separators=(",", ":")) for p in self.pairs
        ]
        return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()


def without_sentence(text: str, sentence: str) -> str:
    """``text`` with ``sentence`` removed, whitespace collapsed. The sentence splitter rewrites
    some blocks (lines joined, a table row as "cell: cell"), so the sentence is looked up
    verbatim, then as a run of whitespace-separated words, and otherwise the positive is the
    chunk's other sentences."""
    if sentence in text:
        return " ".join(text.replace(sentence, " ", 1).split())
    words, target = text.split(), sentence.split()
    for start in range(len(words) - len(target) + 1):
        if words[start : start + len(target)] == target:
            return " ".join(words[:start] + words[start + len(target) :])
    return " ".join(s for s in split_sentences(text) if s.strip() != sentence)


def build_pairs(
    chunks: Iterable[ChunkRecord],
    bm25: BM25Fn | None,
    *,
    negatives: bool = True,
    reader: Principal | None = None,
    golden: Sequence[Any] = (),
    rule: GoldenOverlapRule | None = None,
    max_pairs: int | None = None,
    seed: int = 13,
    shuffled: bool = False,
    keep_sentence_share: float = KEEP_SENTENCE_SHARE,
    depth: int = NEGATIVE_DEPTH,
) -> PairsReport:
    """ICT pairs from the chunks ``reader`` (None: public) may read; see the module
    docstring. ``negatives``: search ``bm25`` for each query's hard negative (without it,
    ``bm25`` is never called and may be None). ``golden``: items with ``question`` and
    ``reference_answer``. ``max_pairs``: a seeded sample spread over documents (None: every
    candidate). Pairs come back in ``pair_id`` order."""
    if negatives and bm25 is None:
        raise PairsError("hard negatives need a BM25 search (bm25 is None)")
    if max_pairs is not None and max_pairs < 0:
        raise PairsError(f"max_pairs must be >= 0, not {max_pairs}")
    if not 0.0 <= keep_sentence_share <= 1.0:
        raise PairsError(f"keep_sentence_share must be in [0, 1], not {keep_sentence_share}")
    if depth < 1:
        raise PairsError(f"depth must be >= 1, not {depth}")
    who = reader or Principal.public()
    rule = rule or GoldenOverlapRule()
    golden_q = [set(content_tokens(g.question)) for g in golden]
    golden_refs = _GoldenRefs(str(g.reference_answer) for g in golden if g.reference_answer)
    report = PairsReport(pairs=[], negatives=negatives, shuffled=shuffled, seed=seed, rule=rule)
    readable: dict[str, ChunkRecord] = {}
    unreadable: set[str] = set()
    drafted: list[tuple[ChunkRecord, str, str]] = []  # (chunk, query, positive)
    all_chunks = list(chunks)
    for chunk in all_chunks:
        if who.can_read(chunk.audience):
            readable[chunk.chunk_id] = chunk
        else:
            unreadable.add(chunk.chunk_id)
    for chunk in all_chunks:
        report.chunks_seen += 1
        if chunk.chunk_id in unreadable:
            report.dropped_audience += 1
            continue
        sentences = informative_sentences(chunk.text)
        if not sentences:
            report.skipped_no_sentence += 1
            continue
        # A seeded order per chunk (independent of the other chunks: adding a document does not
        # change the sentence another chunk gives), the next one tried after a golden drop.
        order = random.Random(f"{seed}\x1f{chunk.chunk_id}").sample(sentences, len(sentences))
        for sentence in order:
            words = content_tokens(sentence)
            if any(_jaccard(words, g) >= rule.question_jaccard for g in golden_q):
                report.dropped_golden_question += 1
                continue
            if golden_refs.best_f1_at_least(sentence, rule.answer_f1):
                report.dropped_golden_answer += 1
                continue
            positive = without_sentence(chunk.text, sentence)
            if not positive.strip() or positive.strip() == sentence:
                report.skipped_single_sentence += 1
                break
            drafted.append((chunk, sentence, positive))
            break
        else:
            report.skipped_all_golden += 1  # every sentence of the chunk restated a golden item
    pairs: list[TrainingPair] = []
    for chunk, query, positive in drafted:
        if not negatives:
            pairs.append(TrainingPair(query, positive, "", chunk.chunk_id, chunk.doc_id, "", ""))
            continue
        assert bm25 is not None  # checked above
        hits = bm25(query, depth)
        leaked = [chunk_id for chunk_id, _, _ in hits if chunk_id in unreadable]
        if leaked:
            raise PairsError(
                f"the BM25 search as {who.name} ({','.join(who.visible_groups)}) returned chunks "
                f"that audience may not read ({', '.join(leaked[:3])}): the search must filter "
                "by the reader's groups"
            )
        negative = next(
            (
                (cid, did, text)
                for cid, did, text in hits
                if did != chunk.doc_id and cid in readable and text.strip()
            ),
            None,
        )
        if negative is None:
            report.dropped_no_negative += 1
            continue
        pairs.append(
            TrainingPair(
                query=query,
                positive=positive,
                negative=negative[2],
                chunk_id=chunk.chunk_id,
                doc_id=chunk.doc_id,
                negative_chunk_id=negative[0],
                negative_doc_id=negative[1],
            )
        )
    report.candidates = len(pairs)
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = spread_sample(pairs, max_pairs, seed, key=lambda p: (p.doc_id, p.pair_id))
    pairs.sort(key=lambda p: p.pair_id)
    pairs = _keep_some_sentences(pairs, keep_sentence_share, seed, readable)
    if shuffled:
        pairs = shuffle_positives(pairs, seed)
    report.pairs = pairs
    return report


def _keep_some_sentences(
    pairs: list[TrainingPair], share: float, seed: int, chunks: dict[str, ChunkRecord]
) -> list[TrainingPair]:
    """A seeded ``share`` of the pairs get their whole chunk (sentence kept) as the positive."""
    n = round(share * len(pairs))
    keep = set(random.Random(f"{seed}\x1fkeep").sample(range(len(pairs)), n)) if n else set()
    out = []
    for i, pair in enumerate(pairs):
        if i in keep:
            text = " ".join(chunks[pair.chunk_id].text.split())
            pair = TrainingPair(**{**pair.to_record(), "positive": text, "kept_sentence": True})
        out.append(pair)
    return out


def shuffle_positives(pairs: list[TrainingPair], seed: int) -> list[TrainingPair]:
    """Each query paired with another pair's positive (a seeded permutation with no fixed
    point; negatives stay): training on these teaches the model the wrong neighbours."""
    if len(pairs) < 2:
        return list(pairs)
    order = list(range(len(pairs)))
    random.Random(f"{seed}\x1fshuffle").shuffle(order)
    # Rotating the shuffled order by one is a derangement: nobody keeps their own positive.
    target = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
    return [
        TrainingPair(
            **{
                **pair.to_record(),
                "positive": pairs[target[i]].positive,
                "chunk_id": pairs[target[i]].chunk_id,
                "doc_id": pairs[target[i]].doc_id,
            }
        )
        for i, pair in enumerate(pairs)
    ]


class MemoryBM25:
    """Okapi BM25 (k1 1.2, b 0.75) over the content words of chunks in memory, filtered by a
    reader's audience before ranking as Elasticsearch filters: a :data:`BM25Fn` for tests and
    for corpora not in an index. Ties break by chunk order."""

    def __init__(
        self,
        chunks: Sequence[ChunkRecord],
        *,
        reader: Principal | None = None,
        k1: float = 1.2,
        b: float = 0.75,
    ) -> None:
        who = reader or Principal.public()
        self.chunks = [c for c in chunks if who.can_read(c.audience)]
        self.k1, self.b = k1, b
        self.tfs: list[Counter[str]] = [Counter(content_tokens(c.text)) for c in self.chunks]
        self.lengths = [sum(tf.values()) for tf in self.tfs]
        self.avg_length = sum(self.lengths) / len(self.lengths) if self.lengths else 0.0
        df: Counter[str] = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(self.chunks)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.postings: dict[str, list[int]] = {}
        for i, tf in enumerate(self.tfs):
            for term in tf:
                self.postings.setdefault(term, []).append(i)

    def __call__(self, query: str, k: int) -> list[tuple[str, str, str]]:
        scores: dict[int, float] = {}
        for term in set(content_tokens(query)):
            idf = self.idf.get(term)
            if idf is None:
                continue
            for i in self.postings[term]:
                tf = self.tfs[i][term]
                norm = self.k1 * (1 - self.b + self.b * self.lengths[i] / self.avg_length)
                scores[i] = scores.get(i, 0.0) + idf * tf * (self.k1 + 1) / (tf + norm)
        best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
        return [(self.chunks[i].chunk_id, self.chunks[i].doc_id, self.chunks[i].text) for i in best]


_SPACE = re.compile(r"\s+")


def sample_records(report: PairsReport, n: int = 20) -> list[dict[str, Any]]:
    """The first ``n`` pairs as records, texts cut for reading (the MLflow artifact)."""

    def cut(text: str, limit: int = 300) -> str:
        text = _SPACE.sub(" ", text).strip()
        return text if len(text) <= limit else text[: limit - 1] + "…"

    return [
        {**p.to_record(), "positive": cut(p.positive), "negative": cut(p.negative)}
        for p in report.pairs[:n]
    ]
