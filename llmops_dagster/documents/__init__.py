"""Documents: extract text from raw source rows, reject bad inputs with reasons, store a delta.

Dagster-free; the documents asset calls ``build_documents`` and hands ``delta.to_chunk`` /
``delta.deleted`` to the chunker.
"""

from llmops_dagster.documents.build import build_documents
from llmops_dagster.documents.document_table import DocumentsDelta, sync_documents
from llmops_dagster.documents.normalize import (
    NormalizedBatch,
    normalize_file_rows,
    normalize_record_rows,
)
from llmops_dagster.documents.rows import Document, Rejected, RejectReason, make_doc_id

__all__ = [
    "Document",
    "DocumentsDelta",
    "NormalizedBatch",
    "RejectReason",
    "Rejected",
    "build_documents",
    "make_doc_id",
    "normalize_file_rows",
    "normalize_record_rows",
    "sync_documents",
]
