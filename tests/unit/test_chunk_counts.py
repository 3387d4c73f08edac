"""Chunk token counts read off the section's tokenisation equal a fresh count, and only the
pieces where that is provable skip the second tokenisation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from llmops_dagster.config import default_embedding_model
from llmops_dagster.text.chunking import TokenCounter, chunk_document

pytestmark = pytest.mark.unit

# Accents, a letter whose lower case is two characters, CJK, a control character Python calls
# space but BERT deletes (\x1c), punctuation glued to words, an over-long word ([UNK]) and
# a special token's text.
TRICKY = (
    "İstanbul naïve 日本語テキスト end.\tTab\r\nline ab\x1ccd (x), [MASK] e.g. "
    + "y" * 120
    + " internationalization, well-known; 3.14\n\nDone!"
)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter(AutoTokenizer.from_pretrained(default_embedding_model()))


def test_span_count_equals_a_fresh_count_for_every_whitespace_bounded_piece(
    counter: TokenCounter,
) -> None:
    _, starts = counter.offsets_and_starts(TRICKY)
    spaces = [i for i, c in enumerate(TRICKY) if c in " \t\n\r"]
    piece_starts = [0] + [i + 1 for i in spaces]  # right after whitespace
    piece_ends = [*spaces, len(TRICKY)]  # right before whitespace
    checked = 0
    for start in piece_starts:
        for end in (e for e in piece_ends if e > start):
            known = counter.span_count(TRICKY, starts, start, end)
            assert known is not None, (start, end)
            assert known == counter.count(TRICKY[start:end]), TRICKY[start:end]
            checked += 1
    assert checked == 151


def test_span_count_refuses_cuts_inside_a_word_or_at_a_deleted_control_char(
    counter: TokenCounter,
) -> None:
    text = "internationalization ab\x1ccd ef"
    _, starts = counter.offsets_and_starts(text)
    assert counter.span_count(text, starts, 0, 5) is None  # "inter" is not "international"[:5]
    assert counter.span_count(text, starts, 5, 20) is None
    cd = text.index("cd")
    # Python's isspace() is True for \x1c, but BERT deletes it: "ab\x1ccd" is one word.
    assert "\x1c".isspace()
    assert counter.span_count(text, starts, cd, cd + 2) is None
    assert counter.span_count(text, starts, 0, 20) == counter.count("internationalization")


def _counter_with(config_edit: Any) -> TokenCounter:
    backend = AutoTokenizer.from_pretrained(default_embedding_model()).backend_tokenizer
    config = json.loads(backend.to_str())
    config_edit(config)
    return TokenCounter(Tokenizer.from_str(json.dumps(config)))


def test_other_tokenizer_pipelines_are_always_recounted() -> None:
    def metaspace(config: dict[str, Any]) -> None:
        config["pre_tokenizer"] = {
            "type": "Metaspace",
            "replacement": "▁",
            "prepend_scheme": "always",
            "split": True,
        }

    def spaced_added_token(config: dict[str, Any]) -> None:
        extra = {**config["added_tokens"][-1], "id": 30522, "content": "new york"}
        config["added_tokens"].append(extra)

    for edit in (metaspace, spaced_added_token):
        other = _counter_with(edit)
        assert other.words_are_independent is False
        _, starts = other.offsets_and_starts("plain words here")
        assert other.span_count("plain words here", starts, 0, 5) is None


def test_prose_chunks_are_counted_without_a_second_tokenisation(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    recounted: list[str] = []
    original = counter.count_many

    def spy(texts: list[str]) -> list[int]:
        recounted.extend(texts)
        return original(texts)

    monkeypatch.setattr(counter, "count_many", spy)
    prose = "Dense retrieval maps queries and passages into one vector space. " * 60
    chunks = chunk_document("d", prose, tokenizer=counter, chunk_size=64, overlap=8, fmt="txt")
    assert len(chunks) == 15
    assert recounted == []
    assert [c.token_count for c in chunks] == [counter.count(c.text) for c in chunks]
    # A one-token ([UNK]) word longer than max_chars is sliced mid-word: those pieces are
    # re-tokenised (each slice is many word pieces, not the one [UNK]).
    word = "z" * 120
    sliced = chunk_document("d", word, tokenizer=counter, chunk_size=64, overlap=0, max_chars=50)
    assert [c.text for c in sliced] == [word[:50], word[50:100], word[100:]]
    assert recounted == [word[:50], word[50:100], word[100:]]
    assert [c.token_count for c in sliced] == [26, 26, 11]
