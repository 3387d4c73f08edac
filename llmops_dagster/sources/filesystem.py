"""A dlt source over a folder: lists files by glob, reads their bytes, loads ``fs_files``.

dlt's ``filesystem`` resource lists files; the transformer keeps each file's modification date
and size in dlt's resource state and passes on only files that are new or changed since the last
run, so unchanged files are neither re-read nor re-loaded. Rows merge on the relative path, so
a changed file replaces its row. Files larger than ``max_bytes`` are listed but not read: the
row carries ``too_large=True`` and no content, so the documents step can reject it with a
reason instead of the loader running out of memory.

Deleted files never show up in an incremental listing; ``list_current_files`` gives the
documents step the full current set to compare against.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
from dlt.common.storages.fsspec_filesystem import FileItemDict
from dlt.sources import DltResource, DltSource
from dlt.sources.filesystem import filesystem

from llmops_dagster.sources.source_config import DEFAULT_GLOBS, DEFAULT_MAX_BYTES, path_matches
from llmops_dagster.sources.tables import FS_TABLE


def _matches(relative_path: str, globs: Sequence[str]) -> bool:
    # One matcher for the listing and the audience rules: they must agree on what a glob means.
    return path_matches(relative_path, globs)


def file_row(item: FileItemDict, max_bytes: int) -> dict[str, Any]:
    """One ``fs_files`` row; the file is read only when it is within the size limit."""
    size = item.get("size_in_bytes")
    too_large = size is not None and size > max_bytes
    content: bytes | None = None
    if not too_large:
        content = item.read_bytes()
        # The listing's size can be stale or missing; the bytes we hold are the truth.
        size = len(content)
        if size > max_bytes:
            too_large, content = True, None
    return {
        "relative_path": item["relative_path"],
        "file_name": item["file_name"],
        "file_url": item["file_url"],
        "mime_type": item.get("mime_type"),
        "modification_date": item["modification_date"],
        "size_in_bytes": size,
        "too_large": too_large,
        "content": content,
    }


@dlt.source(name="fs")
def filesystem_source(
    root: str | Path,
    globs: Sequence[str] = DEFAULT_GLOBS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    initial_modification_date: datetime | None = None,
) -> DltResource:
    """Files under ``root`` matching ``globs`` → table ``fs_files`` (merge on relative path)."""
    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        raise ValueError(f"filesystem source: root {root_path} is not a folder (filesystem.root)")
    patterns = list(globs)

    # One recursive listing filtered by our globs: one resource, one state, one table.
    listing = filesystem(bucket_url=root_path.as_uri(), file_glob="**/*")
    listing.add_filter(lambda item: _matches(item["relative_path"], patterns))
    if initial_modification_date is not None:
        listing.add_filter(lambda item: item["modification_date"] >= initial_modification_date)

    @dlt.transformer(
        name=FS_TABLE,
        primary_key="relative_path",
        write_disposition="merge",
        columns={
            "content": {"data_type": "binary", "nullable": True},
            "too_large": {"data_type": "bool"},
            "size_in_bytes": {"data_type": "bigint", "nullable": True},
        },
    )
    def read_files(items: Iterable[FileItemDict]) -> Iterator[dict[str, Any]]:
        # Per-file state (path -> mtime|size) rather than one max-mtime cursor: a cursor misses
        # files copied in with an *older* mtime (cp -p, rsync -a, tar -x), which would be lost.
        # The state is committed with the load, so a failed load re-reads the same files.
        seen: dict[str, str] = dlt.current.resource_state().setdefault("files", {})
        for item in items:
            stamp = f"{item['modification_date'].isoformat()}|{item.get('size_in_bytes')}"
            if seen.get(item["relative_path"]) == stamp:
                continue
            row = file_row(item, max_bytes)
            seen[item["relative_path"]] = stamp
            yield row

    return listing | read_files


def make_filesystem_source(
    root: str | Path,
    globs: Sequence[str] = DEFAULT_GLOBS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DltSource:
    """Convenience wrapper with the config model's field names (for the Dagster asset)."""
    return filesystem_source(root=str(root), globs=list(globs), max_bytes=max_bytes)


def list_current_files(root: str | Path, globs: Sequence[str] = DEFAULT_GLOBS) -> set[str]:
    """Relative POSIX paths of the files that exist now (same matching as the source).

    The documents step marks documents whose file is not in this set as deleted.
    """
    root_path = Path(root).expanduser().resolve()
    patterns = list(globs)
    found: set[str] = set()
    for path in root_path.rglob("*"):
        if not path.is_file():
            continue
        relative = path.relative_to(root_path).as_posix()
        if _matches(relative, patterns):
            found.add(relative)
    return found
