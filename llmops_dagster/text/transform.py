"""The text transform applied to every document before it is stored, chunked or embedded."""

from __future__ import annotations

from collections.abc import Callable

from llmops_dagster.text.clean import clean_text
from llmops_dagster.text.pii import redact_pii as _redact


def make_text_transform(*, redact_pii: bool) -> Callable[[str], str]:
    """Cleaning, then (optionally) PII redaction: before chunking, so nothing sensitive is
    embedded or indexed."""
    if not redact_pii:
        return clean_text

    def transform(text: str) -> str:
        return _redact(clean_text(text)).text

    return transform
