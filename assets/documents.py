"""The documents asset: raw rows from every source → one normalised, cleaned table."""

import time

import dagster as dg

from assets._metadata import md
from assets.ingest import WAREHOUSE_WRITERS_POOL
from llmops_dagster.documents.build import build_documents
from llmops_dagster.documents.document_table import get_watermarks, read_documents, read_rejected
from llmops_dagster.resources import MlflowResource, TextResource, WarehouseResource
from llmops_dagster.sources.source_config import SourcesConfig
from llmops_dagster.text.transform import make_text_transform
from llmops_dagster.tracking.digests import documents_digest
from llmops_dagster.tracking.runs import DatasetRef


class DocumentsConfig(dg.Config):
    full_refresh: bool = False
    """Re-read every raw row (e.g. after changing cleaning or PII settings)."""
    redact_pii: bool | None = None
    """Override the text resource's redact_pii (LLMOPS_REDACT_PII) for this run."""


def build_documents_asset(sources: SourcesConfig, deps: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        name="documents",
        deps=deps,
        group_name="prepare",
        kinds={"duckdb", "python"},
        owners=["team:data-platform"],
        pool=WAREHOUSE_WRITERS_POOL,
        description=(
            "One table across sources (`llmops.documents`): stable doc ids, extracted and "
            "cleaned text, content hashes. Bad inputs land in `llmops.rejected_documents` "
            "with a reason instead of failing the run."
        ),
    )
    def documents(
        context: dg.AssetExecutionContext,
        config: DocumentsConfig,
        text: TextResource,
        warehouse: WarehouseResource,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        redact = text.redact_pii if config.redact_pii is None else config.redact_pii
        started = time.perf_counter()
        with warehouse.get_connection() as con:
            delta = build_documents(
                con,
                sources,
                dataset=warehouse.dlt_dataset,
                transform=make_text_transform(redact_pii=redact),
                full_refresh=config.full_refresh,
            )
            preview = read_documents(con, delta.to_chunk[:10]).select(
                ["doc_id", "title", "format", "content_hash"]
            )
            rejected = read_rejected(con)
            digest = documents_digest(con)
            load_ids = get_watermarks(con)
            listing = read_documents(con).select(["doc_id", "title", "format", "content_hash"])
        elapsed = time.perf_counter() - started
        summary = delta.summary()
        context.log.info(f"documents: {summary}")
        lineage = mlflow.log_asset_run(
            context,
            params={"redact_pii": redact, "full_refresh": config.full_refresh},
            metrics={k: float(v) for k, v in summary.items()},
            tags={"documents.digest": digest, "dlt.load_ids": str(load_ids)},
            datasets=[
                DatasetRef(
                    name="documents",
                    digest=digest[:16],
                    source=warehouse.location,
                    rows=listing.to_pylist(),
                )
            ],
        )
        return dg.MaterializeResult(
            metadata={
                **lineage,
                "documents_digest": digest,
                "dlt_load_ids": dg.MetadataValue.json(load_ids),
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
