"""Which retrieved chunks an answer cites.

The prompt asks for ``[chunk:ID]``; ``rag.prompts.parse_citations`` keeps only ids that were
actually retrieved (a model cannot cite a chunk it never saw, and an injected chunk cannot make
it cite a fake one). A 135M model often cites nothing, so when no valid citation is found the
answer falls back to *inferred* citations: the retrieved chunks that share the most content
words with the answer text (at least ``MIN_OVERLAP_TOKENS`` words, or all of a shorter answer's,
and at least half the best chunk's overlap). Those are flagged ``citations_inferred=True`` so
evaluation can score model-made and inferred citations apart; an answer that overlaps no chunk
cites nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmops_dagster.rag.hits import HitLike, content_tokens
from llmops_dagster.rag.prompts import parse_citations

MIN_OVERLAP_TOKENS = 2


def infer_citations(answer_text: str, hits: Sequence[HitLike]) -> list[str]:
    """Retrieved chunks whose text shares the most content words with the answer."""
    answer_words = set(content_tokens(answer_text))
    if not answer_words:
        return []
    overlaps = [(len(answer_words & set(content_tokens(h.text))), h.chunk_id) for h in hits]
    best = max((n for n, _ in overlaps), default=0)
    # A one-word answer ("2019.") can only overlap by one word.
    needed = min(MIN_OVERLAP_TOKENS, len(answer_words))
    if best < needed:
        return []
    threshold = max(needed, (best + 1) // 2)
    ranked = sorted(overlaps, key=lambda item: -item[0])  # stable: ties keep retrieval order
    return [chunk_id for n, chunk_id in ranked if n >= threshold]


def citations_for(text: str, hits: Sequence[HitLike]) -> tuple[list[str], bool]:
    """The chunk ids ``text`` cites, and whether they were inferred (no valid citation)."""
    cited = parse_citations(text, [h.chunk_id for h in hits])
    if cited:
        return cited, False
    return infer_citations(text, hits), True
