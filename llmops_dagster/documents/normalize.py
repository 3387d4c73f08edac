"""Raw dlt rows (``fs_files``, ``api_*``, ``sql_*``) → ``Document`` and ``Rejected`` rows.

Never raises for one bad input: each failure becomes a rejected row with a contract reason and
a detail, so a run over a thousand files with three broken ones yields 997 documents and three
explained rejections. Text cleaning and PII redaction plug in as ``transform`` (str → str).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmops_dagster.access import AccessError, normalize_audience
from llmops_dagster.documents.extract import (
    Extracted,
    ExtractionError,
    extract_file,
    record_id,
    record_to_extracted,
)
from llmops_dagster.documents.rows import (
    Document,
    Rejected,
    RejectReason,
    make_doc_id,
    utc,
)
from llmops_dagster.hashing import content_hash
from llmops_dagster.sources.source_config import RecordMapping

TextTransform = Callable[[str], str]
#: A file's relative path → the groups allowed to read it (``FilesystemSourceConfig.audience_for``).
AudienceResolver = Callable[[str], Sequence[str]]


@dataclass
class NormalizedBatch:
    """Documents and rejections from some raw rows, plus the files they fully describe.

    ``files`` lets the store delete documents of a re-read file that no longer yields them
    (a record dropped from a JSON export, a file that now fails to parse).
    """

    documents: list[Document] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    files: set[tuple[str, str]] = field(default_factory=set)

    def extend(self, other: NormalizedBatch) -> None:
        self.documents.extend(other.documents)
        self.rejected.extend(other.rejected)
        self.files |= other.files

    def rejected_by_reason(self) -> dict[str, int]:
        return dict(Counter(r.reason for r in self.rejected))


class _Builder:
    """Accumulates one batch; owns the duplicate-id and transform rules."""

    def __init__(self, transform: TextTransform | None) -> None:
        self.batch = NormalizedBatch()
        self.transform = transform
        self._seen: set[str] = set()

    def reject(self, source: str, key: str, uri: str, reason: RejectReason, detail: str) -> None:
        doc_id = make_doc_id(source, key)
        self._seen.add(doc_id)
        self.batch.rejected.append(Rejected(doc_id, source, key, uri, reason.value, detail[:2000]))

    def add(
        self,
        source: str,
        key: str,
        uri: str,
        extracted: Extracted,
        updated_at: datetime | None,
        metadata: dict[str, Any],
        allowed_groups: Sequence[str] | None = None,
    ) -> None:
        doc_id = make_doc_id(source, key)
        if doc_id in self._seen:
            self.reject(source, key, uri, RejectReason.PARSE_ERROR, "duplicate id in this input")
            return
        text = extracted.text
        if self.transform is not None:
            try:
                text = self.transform(text)
            except Exception as exc:  # a cleaning bug must not sink the run
                self.reject(
                    source, key, uri, RejectReason.PARSE_ERROR, f"transform failed: {exc!r}"
                )
                return
        text = (text or "").strip()
        if not text:
            self.reject(source, key, uri, RejectReason.EMPTY, "no text after extraction/cleaning")
            return
        self._seen.add(doc_id)
        meta = {**metadata, **extracted.metadata}
        self.batch.documents.append(
            Document(
                doc_id=doc_id,
                source=source,
                natural_key=key,
                title=(extracted.title or key).strip()[:500],
                text=text,
                uri=uri,
                format=extracted.format,
                updated_at=utc(_as_datetime(extracted.updated_at) or updated_at),
                content_hash=content_hash(text),
                metadata=json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str),
                allowed_groups=tuple(normalize_audience(allowed_groups)),
            )
        )


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value.strip():
        try:
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def normalize_file_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    source: str = "fs",
    mapping: RecordMapping | None = None,
    transform: TextTransform | None = None,
    audience: AudienceResolver | None = None,
) -> NormalizedBatch:
    """``fs_files`` rows (relative_path, file_url, modification_date, too_large, content).

    ``audience`` gives each file's readers by path (every record of an export shares its
    file's); without it every document is public.
    """
    builder = _Builder(transform)
    for row in rows:
        path = str(row.get("relative_path") or "")
        uri = str(row.get("file_url") or path)
        if not path:
            builder.reject(source, uri, uri, RejectReason.PARSE_ERROR, "row has no relative_path")
            continue
        builder.batch.files.add((source, path))
        try:
            groups = audience(path) if audience is not None else None
            _normalize_one_file(builder, row, source, path, uri, mapping, groups)
        except Exception as exc:  # last line of defence: one file never fails the batch
            builder.reject(source, path, uri, RejectReason.PARSE_ERROR, f"{exc!r}")
    return builder.batch


def _normalize_one_file(
    builder: _Builder,
    row: Mapping[str, Any],
    source: str,
    path: str,
    uri: str,
    mapping: RecordMapping | None,
    allowed_groups: Sequence[str] | None,
) -> None:
    size = row.get("size_in_bytes")
    if row.get("too_large"):
        builder.reject(source, path, uri, RejectReason.TOO_LARGE, f"{size} bytes over the limit")
        return
    content = row.get("content")
    if content is None:
        builder.reject(source, path, uri, RejectReason.EMPTY, "no content was loaded")
        return
    modified = row.get("modification_date")
    try:
        parts = extract_file(bytes(content), path, mapping)
    except ExtractionError as exc:
        builder.reject(source, path, uri, exc.reason, exc.detail)
        return
    base_meta = {"path": path, "size_in_bytes": size, "mime_type": row.get("mime_type")}
    for part in parts:
        key = f"{path}{part.key_suffix}"
        builder.add(
            source, key, f"{uri}{part.key_suffix}", part, modified, base_meta, allowed_groups
        )


def record_audience(record: Mapping[str, Any], audience_field: str | None) -> list[str]:
    """A record's readers from its ``audience_field``: a list, a JSON list (dlt keeps nested
    values as JSON text) or a comma-separated string; missing or empty → public."""
    if not audience_field:
        return normalize_audience(None)
    value = record.get(audience_field)
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise AccessError(f"not a JSON list: {value[:80]!r}") from exc
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise AccessError(f"expected group names (strings), got {value!r}")
    elif value is not None and not isinstance(value, str):
        raise AccessError(f"expected a list or a comma-separated string, got {value!r}")
    return normalize_audience(value)


def normalize_record_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    source: str,
    collection: str,
    mapping: RecordMapping | None = None,
    transform: TextTransform | None = None,
    uri_prefix: str | None = None,
) -> NormalizedBatch:
    """API items or SQL rows → one document each; natural key ``<collection>#<id>``.

    The collection (resource or table) is part of the key so ``articles#1`` and ``users#1`` from
    the same source never collide.
    """
    mapping = mapping or RecordMapping()
    builder = _Builder(transform)
    for index, row in enumerate(rows, start=1):
        record = {k: v for k, v in row.items() if not str(k).startswith("_dlt")}
        try:
            extracted = record_to_extracted(record, mapping, f"row{index}", "record")
            rid = extracted.key_suffix[1:]
            key = f"{collection}#{rid}"
            if mapping.uri_template:
                try:
                    uri = mapping.uri_template.format(**{**record, "id": rid})
                except (KeyError, IndexError, ValueError):
                    uri = f"{uri_prefix or collection}#{rid}"
            else:
                uri = f"{uri_prefix or collection}#{rid}"
            if record_id(record, mapping) is None:
                builder.reject(
                    source, key, uri, RejectReason.PARSE_ERROR, f"no '{mapping.id_field}' field"
                )
                continue
            try:
                groups = record_audience(record, mapping.audience_field)
            except AccessError as exc:
                # Never guess wider: a record whose audience cannot be read is not published.
                builder.reject(
                    source,
                    key,
                    uri,
                    RejectReason.PARSE_ERROR,
                    f"invalid audience in field {mapping.audience_field!r}: {exc}",
                )
                continue
            builder.add(source, key, uri, extracted, None, {"collection": collection}, groups)
        except Exception as exc:  # one odd record never fails the batch
            key = f"{collection}#row{index}"
            builder.reject(source, key, key, RejectReason.PARSE_ERROR, f"{exc!r}")
    return builder.batch
