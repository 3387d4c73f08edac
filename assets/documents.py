"""The documents asset: raw rows from every source → one normalised, cleaned table."""

import time

import dagster as dg

from assets._metadata import md
from assets.ingest import DUCKDB_POOL
from llmops_dagster.documents.build import build_documents
from llmops_dagster.documents.store import read_documents, read_rejected
from llmops_dagster.resources import LlmopsSettingsResource
from llmops_dagster.sources.source_config import SourcesConfig
from llmops_dagster.text.pipeline import make_text_transform
from llmops_dagster.warehouse import connect


class DocumentsConfig(dg.Config):
    full_refresh: bool = False
    """Re-read every raw row (e.g. after changing cleaning or PII settings)."""
    redact_pii: bool | None = None
    """Override LLMOPS_REDACT_PII for this run."""


def build_documents_asset(sources: SourcesConfig, deps: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        name="documents",
        deps=deps,
        group_name="prepare",
        kinds={"duckdb", "python"},
        owners=["team:data-platform"],
        pool=DUCKDB_POOL,
        description=(
            "One table across sources (`llmops.documents`): stable doc ids, extracted and "
            "cleaned text, content hashes. Bad inputs land in `llmops.rejected_documents` "
            "with a reason instead of failing the run."
        ),
    )
    def documents(
        context: dg.AssetExecutionContext, config: DocumentsConfig, llmops: LlmopsSettingsResource
    ) -> dg.MaterializeResult:
        settings = llmops.settings()
        redact = settings.redact_pii if config.redact_pii is None else config.redact_pii
        started = time.perf_counter()
        with connect(settings.effective_duckdb_path) as con:
            delta = build_documents(
                settings,
                sources,
                transform=make_text_transform(redact_pii=redact),
                full_refresh=config.full_refresh,
                con=con,
            )
            preview = read_documents(con, delta.to_chunk[:10]).select(
                ["doc_id", "title", "format", "content_hash"]
            )
            rejected = read_rejected(con)
        elapsed = time.perf_counter() - started
        summary = delta.summary()
        context.log.info(f"documents: {summary}")
        return dg.MaterializeResult(
            metadata={
                **{k: dg.MetadataValue.int(v) for k, v in summary.items()},
                "pii_redaction": redact,
                "seconds": round(elapsed, 3),
                "rejected_by_reason": dg.MetadataValue.json(delta.rejected_by_reason),
                "changed_preview": md(preview.to_pylist(), ["doc_id", "title", "format"]),
                "rejected_preview": md(
                    rejected.slice(0, 20).to_pylist(), ["doc_id", "reason", "detail"]
                ),
                "dagster/row_count": dg.MetadataValue.int(delta.total_documents),
            }
        )

    return documents
