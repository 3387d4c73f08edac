"""What the pipeline prepares text with, and the QA files it trains and evaluates on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from llmops_dagster.config import Settings


class TextResource(dg.ConfigurableResource):
    """How document text is prepared: PII redaction before chunking, and chunk sizes counted in
    the embedding model's tokens."""

    redact_pii: bool = Field(default=True, description="Redact PII before chunking.")
    chunk_size_tokens: int = Field(default=200, description="Embedding-tokenizer tokens.")
    chunk_overlap_tokens: int = Field(default=32, description="Tokens consecutive chunks share.")

    @classmethod
    def from_settings(cls, settings: Settings, *, resolve_secrets: bool = False) -> TextResource:
        del resolve_secrets  # no secret among these fields
        corpus = settings.corpus
        return cls(
            redact_pii=corpus.redact_pii,
            chunk_size_tokens=corpus.chunk_size_tokens,
            chunk_overlap_tokens=corpus.chunk_overlap_tokens,
        )


class DatasetsResource(dg.ConfigurableResource):
    """The QA files fine-tuning and evaluation read, the training audience, and where built
    training datasets are written."""

    train_qa_path: str = Field(description="QA JSONL for the SFT dataset (never golden).")
    train_groups: list[str] = Field(
        default_factory=list,
        description="The training audience (empty: public): training items and context it may "
        "not read are left out, since the adapter is served to everyone using its bundle.",
    )
    golden_path: str = Field(description="Golden QA JSONL or BEIR folder.")
    datasets_dir: str = Field(description="Where built SFT datasets are written.")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, resolve_secrets: bool = False
    ) -> DatasetsResource:
        del resolve_secrets  # no secret among these fields
        corpus = settings.corpus
        return cls(
            train_qa_path=str(corpus.train_qa_path),
            train_groups=corpus.train_group_list,
            golden_path=str(corpus.golden_path),
            datasets_dir=str(settings.datasets_dir),
        )
