"""chunk_document: token budget, structure, coverage, identities, and pathological input."""

from __future__ import annotations

import hashlib
import itertools
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from llmops_dagster.config import default_embedding_model
from llmops_dagster.text.chunking import (
    DEFAULT_CHUNK_SIZE,
    Chunk,
    chunk_document,
    plan_chunks,
    split_sections,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    # The packaged all-MiniLM-L6-v2 folder: a fast tokenizer, no torch, no network.
    return AutoTokenizer.from_pretrained(default_embedding_model())


def count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def reconstruct(text: str, spans: list[Any]) -> str:
    """Chunks glued back without their overlap (whitespace gaps between them kept)."""
    out: list[str] = []
    covered = spans[0].start if spans else 0
    for span in spans:
        if span.start > covered:
            out.append(text[covered : span.start])
        out.append(text[max(span.start, covered) : span.end])
        covered = max(covered, span.end)
    return "".join(out)


PROSE = (
    "Dense retrieval maps queries and passages into one vector space. "
    "It complements BM25, which matches exact terms! Does fusion help? "
    "Reciprocal rank fusion (RRF) combines both rankings without tuning; "
    "weighted fusion needs calibrated scores, e.g. min-max normalised ones.\n\n"
)


def test_default_chunk_size_leaves_room_for_special_tokens(tokenizer: Any) -> None:
    window = 256  # all-MiniLM-L6-v2 max_seq_length
    assert window >= DEFAULT_CHUNK_SIZE + 2
    chunks = chunk_document("d", PROSE * 40, tokenizer=tokenizer)
    assert chunks
    for chunk in chunks:
        with_special = tokenizer(chunk.text, add_special_tokens=True)["input_ids"]
        assert len(with_special) <= window


def test_empty_and_blank_text_give_no_chunks(tokenizer: Any) -> None:
    assert chunk_document("d", "", tokenizer=tokenizer) == []
    assert chunk_document("d", " \n\n\t ", tokenizer=tokenizer) == []
    [title_only] = chunk_document("d", "# Title\n", tokenizer=tokenizer, fmt="md")
    assert (title_only.text, title_only.section) == ("# Title", "Title")


def test_short_text_is_one_chunk_with_contract_fields(tokenizer: Any) -> None:
    [chunk] = chunk_document("fs:notes/a.md", "Hello world.", tokenizer=tokenizer, fmt="txt")
    assert isinstance(chunk, Chunk)
    assert chunk.position == 0
    assert chunk.doc_id == "fs:notes/a.md"
    assert chunk.text == "Hello world."
    assert chunk.token_count == count(tokenizer, "Hello world.") == 3
    assert chunk.content_hash == hashlib.sha256(b"Hello world.").hexdigest()
    expected_id = hashlib.sha256(b"fs:notes/a.md\x1f0\x1fHello world.").hexdigest()[:32]
    assert chunk.chunk_id == expected_id
    assert chunk.section == ""
    with pytest.raises(AttributeError):
        chunk.text = "mutated"  # type: ignore[misc]


def test_markdown_sections_and_heading_paths(tokenizer: Any) -> None:
    text = (
        "Preamble line.\n\n# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n## Empty\n\n"
        "### Deep\n\nDeep text.\n\n```\n# not a heading\n```\n\n"
        "Setext\n======\n\nUnder setext.\n\n# Other\n\nLast."
    )
    sections = split_sections(text, "md")
    assert [s.path for s in sections] == [
        "",
        "Guide",
        "Guide > Install",
        "Guide > Empty > Deep",  # heading-only "Empty" merged forward
        "Setext",
        "Other",
    ]
    chunks = chunk_document("d", text, tokenizer=tokenizer, fmt="md")
    assert [c.section for c in chunks] == [s.path for s in sections]
    assert chunks[3].text.startswith("## Empty\n\n### Deep")
    assert "# not a heading" in chunks[3].text
    # html arrives as Markdown-ish text: same treatment; plain text ignores '#'.
    assert [c.section for c in chunk_document("d", text, tokenizer=tokenizer, fmt="html")] == [
        s.path for s in sections
    ]
    assert {c.section for c in chunk_document("d", text, tokenizer=tokenizer, fmt="txt")} == {""}


def test_chunks_never_span_sections_and_overlap_stays_inside(tokenizer: Any) -> None:
    text = "# A\n\n" + PROSE * 6 + "# B\n\n" + PROSE * 6
    chunks = chunk_document("d", text, tokenizer=tokenizer, chunk_size=64, overlap=16)
    sections = [c.section for c in chunks]
    assert sections == sorted(sections)  # all of A, then all of B
    first_b = sections.index("B")
    assert chunks[first_b].text.startswith("# B")


def test_prefers_sentence_and_paragraph_boundaries(tokenizer: Any) -> None:
    chunks = chunk_document("d", PROSE * 30, tokenizer=tokenizer, chunk_size=100, overlap=0)
    assert len(chunks) > 5
    ends = [c.text.rstrip()[-1] in ".!?;" for c in chunks]
    assert sum(ends) / len(ends) >= 0.9
    fills = [c.token_count / 100 for c in chunks[:-1]]
    assert sum(fills) / len(fills) >= 0.6


def test_overlap_is_in_tokens_and_within_section(tokenizer: Any) -> None:
    text = " ".join(f"w{i}" for i in range(600))  # no sentence structure at all
    spans = plan_chunks(text, tokenizer=tokenizer, chunk_size=50, overlap=10, fmt="txt")
    assert len(spans) > 3
    for previous, current in itertools.pairwise(spans):
        assert previous.start < current.start < previous.end  # overlapping, moving forward
        shared = text[current.start : previous.end]
        assert 0 < count(tokenizer, shared) <= 10
    no_overlap = plan_chunks(text, tokenizer=tokenizer, chunk_size=50, overlap=0, fmt="txt")
    for previous, current in itertools.pairwise(no_overlap):
        assert current.start >= previous.end


def test_ids_are_deterministic_and_depend_on_doc_and_position(tokenizer: Any) -> None:
    text = PROSE * 10
    first = chunk_document("doc-1", text, tokenizer=tokenizer, chunk_size=64)
    again = chunk_document("doc-1", text, tokenizer=tokenizer, chunk_size=64)
    other = chunk_document("doc-2", text, tokenizer=tokenizer, chunk_size=64)
    assert first == again
    assert [c.text for c in first] == [c.text for c in other]
    assert not {c.chunk_id for c in first} & {c.chunk_id for c in other}
    assert len({c.chunk_id for c in first}) == len(first)


def test_one_huge_word_without_spaces(tokenizer: Any) -> None:
    # Punctuation makes WordPiece emit many tokens; the cut must fall mid-"word".
    text = "ab." * 20_000
    chunks = chunk_document("d", text, tokenizer=tokenizer, chunk_size=64, overlap=8, fmt="txt")
    assert len(chunks) > 100
    assert all(0 < c.token_count <= 64 for c in chunks)
    assert reconstruct(text, plan_chunks(text, tokenizer=tokenizer, chunk_size=64, overlap=8))


def test_unk_word_is_bounded_by_characters(tokenizer: Any) -> None:
    # WordPiece turns a >100-character word into a single [UNK]: cap characters instead.
    text = "a" * 50_000
    spans = plan_chunks(text, tokenizer=tokenizer, chunk_size=32, overlap=0, fmt="txt")
    assert all(span.end - span.start <= 32 * 16 for span in spans)
    assert reconstruct(text, spans) == text
    assert all(span.token_count <= 32 for span in spans)


def test_five_megabyte_single_line_finishes(tokenizer: Any) -> None:
    words = ["alpha", "beta,", "gamma", "delta.", "Epsilon", "naïve", "日本", "x"]
    text = " ".join(words[i % len(words)] for i in range(820_000))
    assert len(text) > 4_500_000 and "\n" not in text
    started = time.perf_counter()
    chunks = chunk_document("big", text, tokenizer=tokenizer, fmt="txt")
    elapsed = time.perf_counter() - started
    assert elapsed < 90, elapsed
    assert max(c.token_count for c in chunks) <= DEFAULT_CHUNK_SIZE
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert chunks[0].text.startswith("alpha beta,") and text.endswith(chunks[-1].text)


def test_rejects_nonsense_parameters(tokenizer: Any) -> None:
    with pytest.raises(ValueError):
        chunk_document("d", "x", tokenizer=tokenizer, chunk_size=4)
    with pytest.raises(ValueError):
        chunk_document("d", "x", tokenizer=tokenizer, chunk_size=64, overlap=64)
    with pytest.raises(TypeError):
        chunk_document("d", "x", tokenizer=object())


# --- properties ---------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "the", "model", "Retrieval", "fusion", "embedding", "internationalization", "naïve",
        "日本語", "x", "42", "3.14", "e.g.", "end.", "Why?", "yes!", "(note)", "list,", "a;b",
        "#", "##", "-", "*", "`code`", "https://example.com/a?b=c", "ab" * 30, "Ω",
    ]
)  # fmt: skip
_SEPARATORS = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n", "\n# ", "\n## ", "\n- ", "\t"])


@st.composite
def documents(draw: st.DrawFn) -> str:
    words = draw(st.lists(_WORDS, max_size=400))
    parts: list[str] = []
    for word in words:
        parts.append(word)
        parts.append(draw(_SEPARATORS))
    return "".join(parts)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    text=documents(),
    chunk_size=st.integers(min_value=8, max_value=120),
    overlap_frac=st.floats(min_value=0, max_value=0.5),
    fmt=st.sampled_from(["md", "txt"]),
)
def test_chunker_properties(
    tokenizer: Any, text: str, chunk_size: int, overlap_frac: float, fmt: str
) -> None:
    overlap = int(chunk_size * overlap_frac)
    spans = plan_chunks(text, tokenizer=tokenizer, chunk_size=chunk_size, overlap=overlap, fmt=fmt)
    chunks = chunk_document(
        "doc", text, tokenizer=tokenizer, chunk_size=chunk_size, overlap=overlap, fmt=fmt
    )
    if not text.strip():
        assert chunks == []
        return
    assert chunks
    # Budget: exact, by the embedding tokenizer, re-counted here independently.
    for chunk in chunks:
        assert chunk.token_count == count(tokenizer, chunk.text)
        assert chunk.token_count <= chunk_size
        assert chunk.text == chunk.text.strip() and chunk.text
    # Positions contiguous from 0; ids unique and reproducible; text is a slice of the input.
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    assert [c.text for c in chunks] == [text[s.start : s.end] for s in spans]
    assert (
        chunk_document(
            "doc", text, tokenizer=tokenizer, chunk_size=chunk_size, overlap=overlap, fmt=fmt
        )
        == chunks
    )
    # Order and coverage: spans move forward, and gluing chunks without their overlap gives
    # back every word of the input, in order.
    for previous, current in itertools.pairwise(spans):
        assert previous.start < current.start and previous.end < current.end
        if previous.section != current.section:
            assert current.start >= previous.end  # no overlap across sections
    assert reconstruct(text, spans).split() == text.split()
