"""What a retrieved chunk looks like to the RAG code, and the words it is compared by.

Kept apart from ``answer`` so the answer assembly and the extractive answerer can both use
them without importing each other.
"""

from __future__ import annotations

import re
from typing import Protocol

_WORD_RE = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_STOPWORDS_TEXT = """
a an and are as at be been but by can could did do does for from had has have how i if in into
is it its may must no not of on or our over should so such than that the their them then there
these they this to under up was we were what when where which who why will with would you your
chunk
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


class HitLike(Protocol):
    """A retrieved chunk (``search.retriever.Hit`` fits)."""

    chunk_id: str
    doc_id: str
    text: str
    title: str
    score: float


def content_tokens(text: str) -> list[str]:
    """Lower-cased words without stop words: the unit of overlap and token-F1."""
    return [w for w in _WORD_RE.findall(text.lower()) if w not in _STOPWORDS]
