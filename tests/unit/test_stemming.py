"""Client-side stemming: the exact stems the writer stores and the retriever queries with."""

from __future__ import annotations

import threading

import pytest

from llmops_dagster.search.stemming import (
    is_stemmed_field,
    stem_text,
    stem_words,
    stemmed_field,
    tokenize,
)

pytestmark = pytest.mark.unit


def test_tokenize_lowercases_drops_possessives_and_splits_on_non_alphanumerics() -> None:
    assert tokenize("The patient's RNA-seq, IL-6_levels (3.5 mg)") == [
        "the", "patient", "rna", "seq", "il", "6", "levels", "3", "5", "mg"
    ]  # fmt: skip
    assert tokenize("Patient\u2019s ÉTUDES naïve") == ["patient", "études", "naïve"]
    assert tokenize("") == [] and tokenize("-- !!") == []


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        ("running", "run"),
        ("runs", "run"),
        ("studies", "studi"),
        ("study", "studi"),
        ("infected", "infect"),
        ("infections", "infect"),
        ("deficiency", "defici"),
        ("fractures", "fractur"),
        ("generalization", "general"),
        ("generally", "general"),
        ("mice", "mice"),  # irregular plurals are not stems' business
        ("the", "the"),
        ("was", "was"),
    ],
)
def test_snowball_english_stems(word: str, stem: str) -> None:
    assert stem_words([word]) == [stem]


def test_stem_text_is_what_index_and_query_share() -> None:
    text = "Vitamin D deficiency increases the risks of fractures"
    assert stem_text(text) == "vitamin d defici increas the risk of fractur"
    # Inflections of one word meet in one stem: that is the whole point.
    assert stem_text("Infected patients") == stem_text("infection patient") == "infect patient"
    assert stem_text(None) == "" and stem_text("") == ""


def test_shadow_field_names() -> None:
    assert stemmed_field("text") == "text_stemmed"
    assert is_stemmed_field("text_stemmed") and is_stemmed_field("title_stemmed^2")
    assert not is_stemmed_field("text") and not is_stemmed_field("text^2")


def test_stemming_is_safe_across_threads() -> None:
    """PyStemmer objects are not thread-safe; each thread gets its own."""
    words = ["running", "studies", "infections", "generalization"] * 500
    expected = stem_words(words)
    results: list[list[str]] = []

    def work() -> None:
        results.append(stem_words(words))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4
