"""The answer key: everything a bundle's answers to a golden set depend on, in one hash.

A recorded set of answers is reused (:mod:`llmops_dagster.evaluate.answer_reuse`) only under
exactly this key, so it must change whenever an answer could:

- the bundle's key (``RagBundle.key``: generator, adapter, decoding, prompt version, retrieval
  settings, answer length, embedding model, index name);
- the golden set's digest (questions, and who asks each: the retrieval filter);
- the physical index and its version (:func:`index_version`): an incremental sync or a deletion
  changes what the same index name holds, so the version hashes every chunk's text hash and
  audience and the index's ``_meta``;
- the code of the answer path (:func:`code_digest` over :data:`ANSWER_PATH`, read from the
  installed package, and the versions of :data:`ANSWER_LIBRARIES`): a changed retriever,
  prompt rendering or decoding loop answers differently under the same settings.

Not in the key, on purpose: the batch size and thread count (how fast, not what), the judge and
the metrics (recomputed on every evaluation). Not in it either: the Elasticsearch server's
version (reading it needs a cluster privilege the evaluation's key may lack) — an upgraded
cluster is a reason to evaluate with ``reuse_answers: false``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from llmops_dagster.rag.bundle import RagBundle

#: Version of the recorded file's layout (part of the key: a new layout never reads an old one).
ANSWERS_FORMAT = 1
#: The package's files that turn a golden question into a recorded answer, relative to the
#: package folder (a folder: every file under it). Serving-only code (guardrails/, serving/)
#: is not on it: evaluation does not run through it.
ANSWER_PATH = (
    "access.py",
    "embed",
    "models",
    "rag",
    "search",
    "resources/models.py",
    "resources/pipelines.py",
    "evaluate/run.py",
    "evaluate/answer_key.py",
    "evaluate/answer_reuse.py",
)
#: Installed distributions whose code runs on the answer path (their versions join the code
#: digest: an upgraded tokenizer or generation loop answers differently under the same settings).
ANSWER_LIBRARIES = (
    "numpy",
    "onnxruntime",
    "peft",
    "PyStemmer",
    "sentence-transformers",
    "tokenizers",
    "torch",
    "transformers",
)


def _package_root() -> Path:
    import llmops_dagster

    return Path(llmops_dagster.__file__).resolve().parent


def library_versions(names: Sequence[str] = ANSWER_LIBRARIES) -> dict[str, str]:
    """Installed version of each distribution ("absent" when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def code_digest(
    root: Path | None = None,
    paths: Sequence[str] = ANSWER_PATH,
    libraries: Mapping[str, str] | None = None,
) -> str:
    """sha256 over the answer path's files (relative path and bytes, sorted by path) under
    ``root`` (default: the installed package) and the ``libraries`` versions (default: the
    installed :data:`ANSWER_LIBRARIES`). Compiled caches are skipped; a path that does not
    exist is an error (the list went stale, and silently hashing less would reuse answers
    across a code change)."""
    root = root or _package_root()
    libraries = library_versions() if libraries is None else libraries
    files: set[Path] = set()
    for relative in paths:
        path = root / relative
        if path.is_file():
            files.add(path)
        elif path.is_dir():
            files.update(
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            )
        else:
            raise ValueError(f"answer path {relative!r} is not in {root}: update ANSWER_PATH")
    digest = hashlib.sha256(json.dumps(dict(libraries), sort_keys=True).encode())
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return f"sha256:{digest.hexdigest()}"


def index_version(client: Elasticsearch, index_name: str) -> str:
    """sha256 of what a physical index holds for retrieval: its ``_meta`` (model, dims, text
    stemming, chunk set) and every chunk's id, text hash and audience. The name alone is not
    enough: an incremental sync upserts and deletes chunks in place."""
    from llmops_dagster.search.mapping import index_meta
    from llmops_dagster.search.sync import live_chunk_sync_keys

    digest = hashlib.sha256()
    digest.update(json.dumps(index_meta(client, index_name), sort_keys=True, default=str).encode())
    keys = live_chunk_sync_keys(client, index_name)
    for chunk_id in sorted(keys):
        digest.update(f"\n{chunk_id}\t{keys[chunk_id]}".encode())
    return f"sha256:{digest.hexdigest()}"


def answer_key(
    *, bundle_key: str, golden_digest: str, index_name: str, index_version: str, code_digest: str
) -> str:
    """The answers' content address: sha256 over every input (see the module docstring)."""
    canonical = json.dumps(
        {
            "format": ANSWERS_FORMAT,
            "bundle_key": bundle_key,
            "golden_digest": golden_digest,
            "index_name": index_name,
            "index_version": index_version,
            "code_digest": code_digest,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class AnswerInputs:
    """The inputs besides the bundle that one evaluation's answers depend on."""

    golden_digest: str
    index_name: str
    index_version: str
    code_digest: str

    def key(self, bundle: RagBundle) -> str:
        if bundle.index_name != self.index_name:
            raise ValueError(
                f"bundle answers on {bundle.index_name}, the evaluation on {self.index_name}"
            )
        return answer_key(
            bundle_key=bundle.key(),
            golden_digest=self.golden_digest,
            index_name=self.index_name,
            index_version=self.index_version,
            code_digest=self.code_digest,
        )

    def as_tags(self) -> dict[str, str]:
        return {
            "answers.index_version": self.index_version,
            "answers.code_digest": self.code_digest,
        }
