"""Token-aware, structure-aware chunking of cleaned documents.

Why this design (measured in ``benchmarks/chunkers.py``; numbers in the project notes):

* **Token budget from the embedding model's own tokenizer.** all-MiniLM-L6-v2 reads at most
  256 tokens including ``[CLS]``/``[SEP]`` and silently truncates the rest, so a chunk that is
  "about 256 words" loses its tail from the index. Counts here are exact, without special
  tokens, and every emitted chunk's count is that of its own text: ``token_count <=
  chunk_size`` always holds. (For a WordPiece tokenizer a chunk cut at whitespace is counted
  off the section's tokenisation, which gives the same number; other chunks are re-tokenised.)
* **Structure first.** Markdown (and HTML, which arrives as Markdown-ish text with ``#``
  headings) is cut at headings; each chunk carries its heading path (``H1 > H2``) in
  ``section`` and never spans two sections. Inside a section, and in plain text, the cut prefers
  (in order) a paragraph break, a line break (list items, table rows, code lines), a sentence
  end, a clause mark, a space, and only then the middle of a word.
* **Linear time.** The section is tokenised once with offsets and the cut is chosen over token
  boundaries, so a 5 MB single line costs one tokenisation. The libraries measured
  (semantic-text-splitter, semchunk, langchain-text-splitters) re-tokenise candidate pieces;
  semantic-text-splitter, the best of them on quality, goes quadratic on long text without
  spaces (10 s for 100 KB of ``ab.ab.``), and langchain only warns when a piece cannot be cut
  below the limit.
* **Overlap in tokens** between consecutive chunks of the same section, starting on a word (or,
  when that keeps at least half the overlap, a sentence) boundary.
* **Stable identities.** ``chunk_id`` hashes doc id, position and text; ``content_hash`` is the
  text's sha256 (the embedding cache key with the model id).

The library is dependency-light on purpose: it needs only a Hugging Face *fast* tokenizer
(``transformers`` tokenizer or a ``tokenizers.Tokenizer``), no torch and no Dagster.

Size (~450 lines, kept whole on purpose): one algorithm — sections, cut points chosen over one
tokenisation's offsets, overlap, hard splits, re-counting — whose steps share those offsets and
gap levels; split across modules they would only pass the same arrays back and forth.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from llmops_dagster.hashing import content_hash
from llmops_dagster.memo import ProcessCache
from llmops_dagster.text.fences import fenced_lines

DEFAULT_CHUNK_SIZE = 200
"""all-MiniLM-L6-v2 has a 256-token window; 200 + [CLS]/[SEP] leaves slack for query prefixes."""
DEFAULT_OVERLAP = 32
MARKDOWN_FORMATS = frozenset({"md", "markdown", "html", "htm"})

# Cut-point quality, best last. A cut "before token i" gets the level of the gap before it.
_MID_WORD, _SPACE, _CLAUSE, _SENTENCE, _LINE, _PARAGRAPH = range(6)
_SENTENCE_END_CHARS = frozenset(".!?…。！？")
_CLOSERS = frozenset("\"')]}’”»")
_CLAUSE_CHARS = frozenset(",;:—–")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_NOT_SETEXT_TITLE = re.compile(r"^\s*(?:[-*+>|#]|\d+[.)]\s|$)")


@dataclass(frozen=True)
class Chunk:
    """One row of ``llmops.chunks`` (see docs/CONTRACTS.md)."""

    chunk_id: str
    doc_id: str
    position: int
    text: str
    token_count: int
    content_hash: str
    section: str


@dataclass(frozen=True)
class Section:
    """A heading-delimited slice ``text[start:end]`` of a document; ``path`` is ``H1 > H2``."""

    path: str
    start: int
    end: int


@dataclass(frozen=True)
class ChunkSpan:
    """Where a chunk lies in the document: ``text[start:end]`` is exactly the chunk's text."""

    start: int
    end: int
    section: str
    token_count: int


def make_chunk_id(doc_id: str, position: int, text: str) -> str:
    """First 32 hex chars of sha256(doc_id \\x1f position \\x1f text): stable across runs."""
    return hashlib.sha256(f"{doc_id}\x1f{position}\x1f{text}".encode()).hexdigest()[:32]


# --- tokenizer -------------------------------------------------------------------------------


class TokenCounter:
    """A fast tokenizer without truncation/padding that counts and locates tokens.

    The backend tokenizer of all-MiniLM-L6-v2 ships with truncation at 128 and padding
    enabled: counting through it as-is would cap every count at 128.
    """

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers import Tokenizer

        if isinstance(tokenizer, Tokenizer):
            backend = tokenizer
        elif getattr(tokenizer, "backend_tokenizer", None) is not None:
            backend = tokenizer.backend_tokenizer
        else:
            raise TypeError(
                "chunking needs a Hugging Face *fast* tokenizer (token offsets); got "
                f"{type(tokenizer).__name__}. Load it with AutoTokenizer.from_pretrained(...)."
            )
        config = backend.to_str()
        self._tokenizer = Tokenizer.from_str(config)
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.words_are_independent = _words_are_independent(json.loads(config))

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of every token of ``text`` (no special tokens)."""
        return self.offsets_and_starts(text)[0]

    def offsets_and_starts(self, text: str) -> tuple[list[tuple[int, int]], list[int]]:
        """:meth:`offsets`, and the start of every token id (zero-width ones included): what
        :meth:`span_count` counts in."""
        all_offsets = self._tokenizer.encode(text, add_special_tokens=False).offsets
        return [(s, e) for s, e in all_offsets if e > s], [s for s, _ in all_offsets]

    def span_count(self, text: str, starts: list[int], start: int, end: int) -> int | None:
        """``count(text[start:end])`` read off the tokenisation of the whole ``text`` (its
        token ``starts``), or ``None`` where that is not provably the same number.

        With a WordPiece pipeline (BERT normaliser and pre-tokeniser) every character maps
        on its own, words never span whitespace and each word is split on its own, so a
        piece cut on both sides at whitespace (or at ``text``'s ends) tokenises into exactly
        the tokens of ``text`` inside it. Any other tokenizer, or a cut inside a word, is
        re-counted. Saves the second tokenisation of nearly every chunk.
        """
        if not self.words_are_independent:
            return None
        if start > 0 and text[start - 1] not in _WORD_SEPARATORS:
            return None
        if end < len(text) and text[end] not in _WORD_SEPARATORS:
            return None
        return bisect.bisect_left(starts, end) - bisect.bisect_left(starts, start)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]


# Whitespace that BERT's normaliser keeps as a separator (it deletes other control characters
# such as \x1c, which Python's isspace() counts as space): only these bound an exact span count.
_WORD_SEPARATORS = frozenset(" \t\n\r")


def _words_are_independent(config: dict[str, Any]) -> bool:
    """Whether the tokenizer splits each whitespace-separated word on its own, with
    character-local normalisation: BERT's normaliser and pre-tokeniser, a WordPiece model, and
    no added token containing whitespace (added tokens are matched before the split)."""
    normalizer = config.get("normalizer") or {}
    pre_tokenizer = config.get("pre_tokenizer") or {}
    model = config.get("model") or {}
    return (
        normalizer.get("type") == "BertNormalizer"
        and pre_tokenizer.get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
        and not any(
            any(c.isspace() for c in str(token.get("content", "")))
            for token in config.get("added_tokens") or []
        )
    )


_COUNTERS: ProcessCache[Any] = ProcessCache("token counters", max_entries=8)


def token_counter(tokenizer: Any) -> TokenCounter:
    """One :class:`TokenCounter` per tokenizer object (copying the backend costs ~20 ms)."""
    if isinstance(tokenizer, TokenCounter):
        return tokenizer
    return _COUNTERS.get_for(tokenizer, lambda: TokenCounter(tokenizer))


# --- sections ----------------------------------------------------------------------------------


def split_sections(text: str, fmt: str = "md") -> list[Section]:
    """Cut ``text`` at Markdown headings (ATX ``#`` and setext), ignoring fenced code.

    Each section starts at its heading line, so the heading text stays searchable in the first
    chunk. A section holding nothing but its heading is merged into the next one (which then
    starts at the parent heading) so no chunk is a lone title. Plain-text formats give a single
    section with an empty path.
    """
    if not text.strip():
        return []
    if fmt.lower() not in MARKDOWN_FORMATS:
        return [Section("", 0, len(text))]

    headings: list[tuple[int, int, str]] = []  # (char offset of the line, level, title)
    offset = 0
    previous: tuple[int, str] | None = None  # (offset, line) of the previous non-heading line
    for line, is_fence, in_code in fenced_lines(text.split("\n")):
        if is_fence:
            previous = None
        elif not in_code:
            atx = _HEADING.match(line)
            setext = _SETEXT.match(line)
            if atx:
                headings.append((offset, len(atx.group(1)), (atx.group(2) or "").strip()))
                previous = None
            elif setext and previous is not None and not _NOT_SETEXT_TITLE.match(previous[1]):
                level = 1 if setext.group(1).startswith("=") else 2
                headings.append((previous[0], level, previous[1].strip()))
                previous = None
            else:
                previous = (offset, line) if line.strip() else None
        offset += len(line) + 1

    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    # Preamble before the first heading (if any) is its own section with an empty path.
    bounds: list[tuple[int, str]] = []
    if not headings or headings[0][0] > 0:
        bounds.append((0, ""))
    for start, level, title in headings:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, " ".join(title.split())))
        bounds.append((start, " > ".join(t for _, t in stack if t)))
    for index, (start, path) in enumerate(bounds):
        end = bounds[index + 1][0] if index + 1 < len(bounds) else len(text)
        sections.append(Section(path, start, end))

    merged: list[Section] = []
    carry: int | None = None
    for section in sections:
        body = text[section.start : section.end]
        start = section.start if carry is None else carry
        if not body.strip():
            continue
        if _is_heading_only(body) and section is not sections[-1]:
            carry = start
            continue
        merged.append(Section(section.path, start, section.end))
        carry = None
    return merged


def _is_heading_only(body: str) -> bool:
    lines = [line for line in body.split("\n") if line.strip()]
    if len(lines) == 1:
        return bool(_HEADING.match(lines[0]))
    return len(lines) == 2 and bool(_SETEXT.match(lines[1]))


# --- cut points --------------------------------------------------------------------------------


def _gap_levels(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """``levels[i]`` = how good a cut *before* token ``i`` is (index 0 unused)."""
    levels = [_PARAGRAPH] * len(offsets)
    previous_end = offsets[0][1] if offsets else 0
    for index in range(1, len(offsets)):
        start, end = offsets[index]
        if start == previous_end:
            levels[index] = _MID_WORD
        else:
            gap = text[previous_end:start]
            if "\n" in gap:
                levels[index] = _PARAGRAPH if gap.count("\n") > 1 else _LINE
            elif not gap.isspace():
                # Characters the tokenizer drops (e.g. zero-width joiners): not a real gap.
                levels[index] = _MID_WORD
            else:
                last = text[previous_end - 1]
                if last in _CLOSERS and previous_end >= 2:
                    last = text[previous_end - 2]
                if last in _SENTENCE_END_CHARS:
                    # "e.g. the" is not a sentence end; "end. The" and "end. 2" are.
                    following = text[start]
                    levels[index] = _CLAUSE if following.islower() else _SENTENCE
                elif last in _CLAUSE_CHARS:
                    levels[index] = _CLAUSE
                else:
                    levels[index] = _SPACE
        previous_end = end
    return levels


def _plan_section(
    text: str,
    start: int,
    end: int,
    counter: TokenCounter,
    chunk_size: int,
    overlap: int,
    max_chars: int,
) -> list[tuple[int, int, int | None]]:
    """Character spans ``(start, end, token count or None)`` of the chunks of
    ``text[start:end]``, in order; the count is known where :meth:`TokenCounter.span_count`
    can read it off the section's tokenisation, else it is ``None`` (the caller counts)."""
    body = text[start:end]
    offsets, starts = counter.offsets_and_starts(body)
    if not offsets:
        # Only characters the tokenizer ignores: keep them visible (0 tokens), bounded in size.
        lead = len(body) - len(body.lstrip())
        stripped = body.strip()
        return [
            (start + lead + i, start + lead + min(i + max_chars, len(stripped)), None)
            for i in range(0, len(stripped), max_chars)
        ]
    levels = _gap_levels(body, offsets)
    n = len(offsets)
    # A chunk runs from its first token's start to the next chunk's first token (the gap goes
    # with the earlier chunk, so characters the tokenizer drops are never lost); the first
    # chunk starts at the section start, the last ends at the section end.
    token_start = [s for s, _ in offsets]
    spans: list[tuple[int, int]] = []
    half = chunk_size // 2
    a = 0
    previous_cut = 0
    while a < n:
        chunk_start = 0 if a == 0 else token_start[a]
        limit = min(n, a + chunk_size)
        # Never exceed max_chars (WordPiece maps a >100-char word to one [UNK] token).
        while limit > a + 1 and offsets[limit - 1][1] - chunk_start > max_chars:
            limit -= 1
        if offsets[a][1] - chunk_start > max_chars:
            # One token longer than max_chars: slice it by characters, no overlap around it.
            token_end = token_start[a + 1] if a + 1 < n else len(body)
            for i in range(chunk_start, token_end, max_chars):
                spans.append((i, min(i + max_chars, token_end)))
            a += 1
            continue
        if limit == n and offsets[n - 1][1] - chunk_start <= max_chars:
            spans.append((chunk_start, len(body)))
            break
        # Best cut p in (a, limit]: highest level, then latest; a cut that leaves the chunk
        # less than half full is demoted two levels so a tiny chunk must buy a lot of structure.
        best_p, best_key = limit, (-99, 0)
        # Each cut must lie beyond the previous one, or overlap would re-emit old text.
        for p in range(limit, max(a, previous_cut), -1):
            level = levels[p] if p < n else _PARAGRAPH
            if p - a < half:
                level -= 2
            if (level, p) > best_key:
                best_key, best_p = (level, p), p
            if level >= _PARAGRAPH:
                break
        p = best_p
        spans.append((chunk_start, token_start[p] if p < n else len(body)))
        if p >= n:
            break
        previous_cut = p
        a = _overlap_start(levels, a, p, overlap)
    planned: list[tuple[int, int, int | None]] = []
    for s, e in spans:
        s, e = _lstrip_start(body, s, e), _rstrip_end(body, s, e)
        planned.append((start + s, start + e, counter.span_count(body, starts, s, e)))
    return planned


def _overlap_start(levels: list[int], a: int, p: int, overlap: int) -> int:
    """First token of the next chunk: up to ``overlap`` tokens back from the cut ``p``."""
    if overlap <= 0:
        return p
    lowest = max(a + 1, p - overlap)
    sentence = next((q for q in range(lowest, p) if levels[q] >= _SENTENCE), None)
    if sentence is not None and p - sentence >= overlap // 2:
        return sentence
    word = next((q for q in range(lowest, p) if levels[q] >= _SPACE), None)
    return word if word is not None else p


def _lstrip_start(body: str, start: int, end: int) -> int:
    while start < end and body[start].isspace():
        start += 1
    return start


def _rstrip_end(body: str, start: int, end: int) -> int:
    while end > start and body[end - 1].isspace():
        end -= 1
    return end


def _hard_split(
    text: str, start: int, end: int, counter: TokenCounter, chunk_size: int
) -> list[tuple[int, int]]:
    """Halve a span until every piece fits; the safety net for re-tokenisation surprises.

    Cutting a word between word pieces can re-tokenise differently (``##ization`` alone is
    ``iz ##ation``), so a planned chunk may, rarely, come back over budget.
    """
    piece = text[start:end]
    if counter.count(piece) <= chunk_size or end - start <= 1:
        return [(start, end)]
    middle = start + (end - start) // 2
    space = text.rfind(" ", start + 1, middle + 1)
    if space > start + (end - start) // 4:
        middle = space
    left = _hard_split(text, start, _rstrip_end(text, start, middle), counter, chunk_size)
    right_start = middle
    while right_start < end and text[right_start].isspace():
        right_start += 1
    return left + _hard_split(text, right_start, end, counter, chunk_size)


def plan_chunks(
    text: str,
    *,
    tokenizer: Any,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    fmt: str = "md",
    max_chars: int | None = None,
) -> list[ChunkSpan]:
    """Chunk boundaries as character spans of ``text`` (``text[span.start:span.end]``).

    Exposed for callers that need offsets (highlighting, citations) and for tests that check
    coverage; :func:`chunk_document` builds :class:`Chunk` rows from it.
    """
    if chunk_size < 8:
        raise ValueError(f"chunk_size must be >= 8 tokens, got {chunk_size}")
    if not 0 <= overlap < chunk_size // 2 + 1:
        raise ValueError(f"overlap must be in [0, chunk_size/2], got {overlap} for {chunk_size}")
    max_chars = max_chars or chunk_size * 16
    counter = token_counter(tokenizer)
    planned: list[tuple[int, int, str, int | None]] = []
    for section in split_sections(text, fmt):
        for s, e, known in _plan_section(
            text, section.start, section.end, counter, chunk_size, overlap, max_chars
        ):
            if e > s:
                planned.append((s, e, section.path, known))
    # Every chunk's count is its own text's (the re-count); read off the section's
    # tokenisation where that is provably the same number, tokenised again elsewhere.
    recounted = iter(counter.count_many([text[s:e] for s, e, _, known in planned if known is None]))
    spans: list[ChunkSpan] = []
    for s, e, path, known in planned:
        count = known if known is not None else next(recounted)
        if count <= chunk_size:
            spans.append(ChunkSpan(s, e, path, count))
            continue
        for hs, he in _hard_split(text, s, e, counter, chunk_size):
            if he > hs:
                spans.append(ChunkSpan(hs, he, path, counter.count(text[hs:he])))
    return spans


def chunk_document(
    doc_id: str,
    text: str,
    *,
    tokenizer: Any,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    fmt: str = "md",
    max_chars: int | None = None,
) -> list[Chunk]:
    """Split a cleaned document into :class:`Chunk` rows, positions contiguous from 0.

    ``tokenizer`` is the embedding model's fast tokenizer; ``chunk_size`` counts tokens without
    special tokens (keep it <= model window - 2). ``fmt`` ``md``/``html`` split at headings;
    anything else is plain text. ``max_chars`` (default ``16 * chunk_size``) bounds chunk length
    for text the tokenizer compresses to almost nothing (a >100-character "word" is one
    ``[UNK]`` for WordPiece). Deterministic: same input, same chunks and ids.
    """
    chunks: list[Chunk] = []
    spans = plan_chunks(
        text,
        tokenizer=tokenizer,
        chunk_size=chunk_size,
        overlap=overlap,
        fmt=fmt,
        max_chars=max_chars,
    )
    for position, span in enumerate(spans):
        chunk_text = text[span.start : span.end]
        chunks.append(
            Chunk(
                chunk_id=make_chunk_id(doc_id, position, chunk_text),
                doc_id=doc_id,
                position=position,
                text=chunk_text,
                token_count=span.token_count,
                content_hash=content_hash(chunk_text),
                section=span.section,
            )
        )
    return chunks
