"""Writing files and folders so that a reader never sees half of one, and locking across processes.

Why one module: results files, API key files, the feedback candidates, converted models, the
local node's distribution and plugin are each written once and read by other processes (a
server, a sensor, a parallel test session). A crash, or two writers at once, must never leave
a half-written file or folder where a reader would take it for a whole one.

- :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`: a temp
  file in the *same folder* (``os.replace`` is atomic only within one file system), flushed and
  ``fsync``-ed before the rename (else a crash just after it can leave an empty file under the
  final name on some file systems), then the folder is ``fsync``-ed so the rename itself
  survives a crash. A failed write removes its temp file and leaves the old file untouched.
- :func:`publish_dir`: build a folder in a temp folder beside the target, then rename it into
  place; the first writer wins and a later one discards its own copy (both built it from the
  same input).
- :func:`file_lock`: one holder at a time across processes, via ``filelock`` (``flock`` on
  Linux: released by the kernel when the holder dies, so a crash never leaves a stale lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Mode of a file written here unless the caller says otherwise: what a plain ``open(..., "w")``
#: gives under the usual umask 022 (``mkstemp`` alone would make every file private, 0600).
DEFAULT_FILE_MODE = 0o644


def _fsync_dir(folder: Path) -> None:
    # Best effort: some file systems refuse fsync on a directory; the data is already synced.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = DEFAULT_FILE_MODE) -> Path:
    """Replace ``path`` with ``data`` atomically (see the module docstring); returns ``path``.

    ``mode`` is set on the temp file before anything is written, so a private file (an API key
    file: 0600) is never readable by others, not even for a moment.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(
    path: Path, text: str, *, encoding: str = "utf-8", mode: int = DEFAULT_FILE_MODE
) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded with ``encoding``."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode)


def atomic_write_json(
    path: Path, data: Any, *, indent: int | None = 2, mode: int = DEFAULT_FILE_MODE
) -> Path:
    """``data`` as JSON (indented, UTF-8, one trailing newline), written atomically.

    The JSON is rendered before the file is touched: data that cannot be serialised raises
    (``TypeError``/``ValueError``) and the old file stays as it was.
    """
    text = json.dumps(data, indent=indent, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text, mode=mode)


def publish_dir(target: Path, build: Callable[[Path], None], *, complete_marker: str) -> Path:
    """``target`` once it holds ``complete_marker``; else ``build(tmp)`` and rename it there.

    ``build`` fills the empty temp folder it is given (a sibling of ``target``, so the rename
    is atomic). If another process published ``target`` meanwhile, its copy is kept and ours
    discarded (both are built from the same input). ``complete_marker`` is a path relative to
    the folder (``bin/elasticsearch``) whose presence means "whole".
    """
    if (target / complete_marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; caches are shared like the models
        if not (tmp / complete_marker).exists():
            raise RuntimeError(f"building {target.name} did not produce {complete_marker}")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / complete_marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def file_lock(path: Path, *, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) across processes.

    Waits as long as it takes unless ``timeout_s`` is given; then raises ``TimeoutError``
    naming the lock file. Within one process, every thread that enters waits its turn too.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=-1 if timeout_s is None else timeout_s)
    try:
        lock.acquire()
    except Timeout as exc:
        raise TimeoutError(
            f"another process has held the lock {path} for over {timeout_s}s"
        ) from exc
    try:
        yield
    finally:
        lock.release()
