"""Text processing between extraction and embedding: cleaning, PII redaction, chunking.

Pure Python with no Dagster import; the only model-side dependency is a Hugging Face fast
tokenizer, passed in by the caller, so chunk sizes are counted in the embedding model's tokens.
"""

from llmops_dagster.text.chunking import Chunk, chunk_document, plan_chunks
from llmops_dagster.text.clean import clean_text
from llmops_dagster.text.pii import RedactionResult, redact_pii

__all__ = ["Chunk", "RedactionResult", "chunk_document", "clean_text", "plan_chunks", "redact_pii"]
