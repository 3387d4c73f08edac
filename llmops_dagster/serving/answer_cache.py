"""A per-audience answer cache for the server: the same question, asked again by someone who
can read exactly the same documents, of the same bundle over the same index, is answered from
memory — no retrieval, no generation, no tokens.

What makes two requests "the same" (:class:`CacheKey`):

- the **bundle** that answers (its ``models:/…`` URI; ``base`` without a champion) and the
  physical **index** the alias pointed to: a different prompt, model, retrieval setting or
  corpus would give a different answer;
- the caller's **visible groups**, all of them (sorted, ``public`` included). Not the user:
  two people with the same groups share entries (that is the point of a cache), two people
  with different groups never do — not even when the cached answer cited public documents
  only. That is deliberately conservative: what retrieval *may* return differs between the
  audiences (an ``hr`` reader's top passages can be confidential ones the public caller's
  search never sees, and the other way round a public-only answer to an ``hr`` reader may be
  worse than what they should get), so an answer is only ever reused for an identical search;
- the **filters** of the request (they narrow the search), canonical JSON;
- the **normalised question** (:func:`normalize_question`): Unicode NFKC, casefolded, runs of
  whitespace collapsed, trailing sentence punctuation (``? ! . , ; : …``) stripped. Nothing
  more clever (no stemming, no embeddings): "semantic" matches would return an answer to a
  question that was not asked.

What is cached: only answers of a **deterministic** pipeline — greedy decoding (the bundle's
``temperature`` is 0, the project's default); with sampling every ask is meant to differ, so
such a bundle is never cached. The relevance refusal ("not in the documents you can see") and
answers without any hit are cached too: they are as deterministic as any answer (same index,
same audience, same question → same search → same refusal), and cheap to recompute only by a
search. A question the injection screen flags is never looked up nor stored, whatever the
policy: the guardrails run on every request's own question text, and a flagged question always
takes the full path (its flags and refusal are then those of that very request). Failed
answers (search or generator down) raise and are never stored.

When entries go: bounded LRU (``LLMOPS_SERVING_ANSWER_CACHE_ENTRIES``, 0 = off, the default) and
a time to live (``LLMOPS_SERVING_ANSWER_CACHE_TTL_S``) since the answer was produced; and the
whole cache is emptied (:meth:`AnswerCache.follow`, counted in ``clears``) when the served
bundle changes (the ``champion`` alias moved: :class:`~llmops_dagster.serving.bundles.
BundleHolder` swapped) or when the index alias points to another physical index. The key holds
both anyway, so a stale entry can never be *returned*; emptying frees the memory at once and
makes the move visible on ``/metrics``. An answer produced by a request that started before a
move is not stored (it belongs to the old scope). Not noticed: documents re-synced *in place*
into the same index (the incremental sync does that); the TTL bounds how long an answer can
lag behind them — the reason the cache is off by default and the TTL is minutes, not hours.

In-process and thread-safe (one lock; every operation is a dict move). Each server process has
its own cache: nothing is shared between processes or hosts, and nothing is written to disk
(a cached answer can hold confidential text: it lives only as long as the process).
"""

from __future__ import annotations

import json
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llmops_dagster.rag.answer import Answer

#: Sentence punctuation stripped from the end of a question ("Other punctuation" in Unicode:
#: ? ! . , ; : … and their full-width forms); closing quotes and brackets are kept.
_TRAILING_CATEGORY = "Po"

BASE_BUNDLE = "base"  # the bundle part of the key when no champion exists (the base model)


def normalize_question(question: str) -> str:
    """NFKC, casefold, whitespace runs → one space, trailing sentence punctuation stripped:
    ``"  What is  the Leave policy?? "`` and ``"what is the leave policy"`` are one question."""
    text = " ".join(unicodedata.normalize("NFKC", question).casefold().split())
    end = len(text)
    while end and (text[end - 1].isspace() or unicodedata.category(text[end - 1]) == "Po"):
        end -= 1
    return text[:end]


@dataclass(frozen=True)
class CacheKey:
    """Everything the answer depends on (see the module docstring for why each part)."""

    bundle: str
    index: str
    groups: tuple[str, ...]
    filters: str
    question: str


def cache_key(
    *,
    bundle_uri: str | None,
    index: str | None,
    visible_groups: Sequence[str],
    filters: Mapping[str, Any] | None,
    question: str,
) -> CacheKey:
    """The key of one request; ``visible_groups`` are the caller's (``public`` included)."""
    return CacheKey(
        bundle=bundle_uri or BASE_BUNDLE,
        index=index or "",
        groups=tuple(sorted(set(visible_groups))),
        filters=json.dumps(dict(filters or {}), sort_keys=True, ensure_ascii=False),
        question=normalize_question(question),
    )


@dataclass(frozen=True)
class CachedAnswer:
    """What a hit replays: the answer as first produced, the answer's audience (who may read
    it: the asker's groups and its passages'), the guardrail outcome on its passages, and the
    trace of the answer it came from."""

    answer: Answer  # as the pipeline returned it (the tracer redacts PII again on replay)
    audience: list[str]
    chunk_flags: dict[str, list[str]]
    refused: str | None
    source_trace_id: str
    stored_at: float = 0.0  # the cache's clock

    def replayed(self, question: str, total_ms: float) -> Answer:
        """The answer a hit returns: the cached text, citations and passages for *this* asking
        of the question, with nothing retrieved or generated (times and tokens 0)."""
        import uuid
        from datetime import UTC, datetime

        return replace(
            self.answer,
            answer_id=str(uuid.uuid4()),
            question=question,
            retrieve_ms=0.0,
            prompt_ms=0.0,
            generate_ms=0.0,
            total_ms=round(total_ms, 3),
            prompt_tokens=0,
            completion_tokens=0,
            created_at=datetime.now(UTC).isoformat(),
        )


class ReplayPipeline:
    """Stands in for the served pipeline on a hit, so the tracer writes the same root span and
    metadata as for any answer: one ``answer_cache`` stage (nothing retrieved or generated),
    then the cached answer for this asking of the question."""

    def __init__(self, entry: CachedAnswer, age_s: float) -> None:
        self.entry = entry
        self.age_s = age_s

    def answer(self, question: str, *, observer: Any, **_: Any) -> Answer:
        started = time.perf_counter()
        with observer.stage("answer_cache", hit=True, age_s=round(self.age_s, 3)):
            pass
        return self.entry.replayed(question, (time.perf_counter() - started) * 1000)


@dataclass
class _Stats:
    hits: int = 0
    misses: int = 0
    clears: int = 0
    evictions: int = 0
    expired: int = 0
    dropped_stale: int = 0  # answers of a request that began before a move, not stored


@dataclass
class AnswerCache:
    """LRU + TTL over :class:`CacheKey` → :class:`CachedAnswer`; ``max_entries`` 0 = off
    (every method is then a no-op and nothing is counted)."""

    max_entries: int = 0
    ttl_s: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[CacheKey, CachedAnswer] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stats: _Stats = field(default_factory=_Stats)
    _bundle: str | None = None
    _index: str | None = None

    def __post_init__(self) -> None:
        if self.max_entries < 0:
            raise ValueError(
                "LLMOPS_SERVING_ANSWER_CACHE_ENTRIES must be 0 (off) or more, "
                f"not {self.max_entries}"
            )
        if self.ttl_s <= 0:
            raise ValueError(f"LLMOPS_SERVING_ANSWER_CACHE_TTL_S must be > 0, not {self.ttl_s}")

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    # --- counters (read by /metrics) ---------------------------------------------------------
    @property
    def hits(self) -> int:
        return self._stats.hits

    @property
    def misses(self) -> int:
        return self._stats.misses

    @property
    def clears(self) -> int:
        return self._stats.clears

    @property
    def evictions(self) -> int:
        return self._stats.evictions

    @property
    def dropped_stale(self) -> int:
        return self._stats.dropped_stale

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def hit_rate(self) -> float:
        lookups = self._stats.hits + self._stats.misses
        return self._stats.hits / lookups if lookups else 0.0

    # --- use -----------------------------------------------------------------------------------
    def get(self, key: CacheKey) -> CachedAnswer | None:
        """The live entry for ``key`` (now the most recently used), counting a hit or a miss."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self.clock() - entry.stored_at >= self.ttl_s:
                del self._entries[key]
                self._stats.expired += 1
                entry = None
            if entry is None:
                self._stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self._stats.hits += 1
            return entry

    def put(self, key: CacheKey, entry: CachedAnswer) -> bool:
        """Store ``entry`` (evicting the least recently used beyond the bound); False when off
        or when ``key`` is not of the current bundle and index (a request that began before a
        move: its answer belongs to the old scope)."""
        if not self.enabled:
            return False
        with self._lock:
            if (self._bundle is not None and key.bundle != self._bundle) or (
                self._index is not None and key.index != self._index
            ):
                self._stats.dropped_stale += 1
                return False
            self._entries[key] = replace(entry, stored_at=self.clock())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self._stats.evictions += 1
            return True

    def follow(self, *, bundle: str | None = None, index: str | None = None) -> bool:
        """Note the served bundle (URI; None: not given here) and/or the alias's physical
        index; when either changed from what was noted before, empty the cache and count a
        clear. The first note of each sets the scope without clearing. True when cleared."""
        with self._lock:
            moved = False
            if bundle is not None:
                moved |= self._bundle is not None and bundle != self._bundle
                self._bundle = bundle
            if index is not None:
                moved |= self._index is not None and index != self._index
                self._index = index
            if moved and self.enabled:
                self._entries.clear()
                self._stats.clears += 1
            return moved and self.enabled

    def age_s(self, entry: CachedAnswer) -> float:
        """Seconds since ``entry`` was stored (the cache's clock)."""
        return self.clock() - entry.stored_at

    def clear(self) -> None:
        """Empty the cache (counted as a clear)."""
        with self._lock:
            self._entries.clear()
            self._stats.clears += 1


__all__ = [
    "BASE_BUNDLE",
    "AnswerCache",
    "CacheKey",
    "CachedAnswer",
    "ReplayPipeline",
    "cache_key",
    "normalize_question",
]
