"""clean_text: normalisation that keeps hashes stable and Markdown structure intact."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmops_dagster.text.clean import clean_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("   \n\t \n", ""),
        ("a\r\nb\rc", "a\nb\nc"),
        ("page one\x0cpage two", "page one\npage two"),
        ("bell\x07 and nul\x00 gone", "bell and nul gone"),
        ("keep\ttabs", "keep\ttabs"),
        ("too    many     spaces", "too many spaces"),
        ("non\u00a0breaking\u2009thin", "non breaking thin"),
        ("zero\u200bwidth\ufeff soft\u00adhyphen", "zerowidth softhyphen"),
        ("trailing   \nspaces  ", "trailing\nspaces"),
        ("p1\n\n\n\n\np2", "p1\n\np2"),
        ("p1\n\n\np2", "p1\n\np2"),
        ("p1\n  \n \t \n\np2", "p1\n\np2"),
        ("p1\n\np2", "p1\n\np2"),
        ("  \n\nbody\n\n  ", "body"),
    ],
)
def test_clean_text_examples(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


def test_nfc_composes_characters() -> None:
    decomposed = "Cafe\u0301 de\u0301ja\u0300 vu"
    assert clean_text(decomposed) == "Café déjà vu"
    assert unicodedata.is_normalized("NFC", clean_text(decomposed))


def test_markdown_structure_is_kept() -> None:
    markdown = (
        "# Title\n\nIntro   text.\n\n## Install\n\n- item  one\n  - nested   item\n"
        "1. first\n\n```python\ndef f():\n    return  1   # aligned\n```\n\n> quote"
    )
    cleaned = clean_text(markdown)
    assert cleaned.startswith("# Title\n\nIntro text.\n\n## Install\n\n")
    assert "- item one\n  - nested item\n1. first" in cleaned  # indentation of nesting kept
    assert "    return  1   # aligned" in cleaned  # code spacing untouched
    assert cleaned.endswith("```\n\n> quote")


@given(st.text(max_size=300))
def test_clean_text_is_idempotent_and_normalised(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once
    assert "\r" not in once
    assert "\n\n\n" not in once
    assert once == once.strip()
    assert all(ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in once)


def test_large_input_is_fast() -> None:
    import time

    text = ("word  " * 200 + "\r\n\r\n\r\n") * 4000  # ~5 MB
    started = time.perf_counter()
    cleaned = clean_text(text)
    assert time.perf_counter() - started < 10
    assert "  " not in cleaned and "\r" not in cleaned
