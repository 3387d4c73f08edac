"""Publishing a folder atomically: build it in a temp folder beside the target, then rename.

Why: converted models, downloaded adapters and ONNX exports are written once and read by many
processes. A crash, or two processes converting at once, must never leave a half-written folder
where a reader would take it for a complete one. ``os.rename`` of a sibling folder is atomic on
one file system; the first writer wins and a later one discards its own copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def publish_dir(target: Path, build: Callable[[Path], None], *, complete_marker: str) -> Path:
    """``target`` once it holds ``complete_marker``; else ``build(tmp)`` and rename it there.

    ``build`` fills the empty temp folder it is given. If another process published ``target``
    meanwhile, its copy is kept and ours discarded (both are built from the same input).
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
