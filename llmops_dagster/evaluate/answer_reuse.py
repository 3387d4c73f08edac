"""Answer reuse: a bundle's answers to a golden set, recorded once and scored again.

Why: generating is what an evaluation spends its time on (a 135M model on CPU needs seconds per
answer), and most evaluations ask a bundle that has already answered the very same questions on
the very same index — the base model on every evaluation until there is a champion, an
unchanged champion on every candidate. Its answers cannot have changed when nothing they
depend on has, so they are read back instead of generated; the scores are always recomputed
(the metrics, the judge or the policy may have changed since).

What the answers depend on, hashed into the **answer key** (:func:`answer_key`):

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

Where: the evaluation run that generated a side's answers logs them as ``answers/<key>.json``
and every run tags ``answers.<side>.key`` (the key of the answers it scored) and
``answers.<side>.source_run`` (the run holding that file: itself when it generated them). The
lookup searches the experiment for either side's key tag, newest first. The file holds no chunk
text — restricted documents' text stays in the index, which filters it by audience — only the
ids: the texts are read back from the physical index by id, which the index version pins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_dagster.evaluate.golden import GoldenSet
from llmops_dagster.evaluate.run import AnswerLike, answer_items

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from mlflow import MlflowClient

    from llmops_dagster.access import Principal
    from llmops_dagster.rag.bundle import RagBundle
    from llmops_dagster.rag.pipeline import RagPipeline
    from llmops_dagster.tracking.runs import RunHandle

logger = logging.getLogger(__name__)

#: Version of the recorded file's layout (part of the key: a new layout never reads an old one).
ANSWERS_FORMAT = 1
#: The evaluation's two sides, as tags and metadata name them.
SIDES = ("candidate", "baseline")
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
#: Runs of the experiment looked at per side tag for a recorded set (newest first).
MAX_RUNS_SEARCHED = 20

#: Chunk ids → their text, read from the physical index the answers were given on.
ChunkTexts = Callable[[Sequence[str]], Mapping[str, str]]


def key_tag(side: str) -> str:
    """The run tag holding the key of the answers a side was scored on."""
    return f"answers.{side}.key"


def source_tag(side: str) -> str:
    """The run tag naming the run whose ``answers/<key>.json`` those answers are."""
    return f"answers.{side}.source_run"


def answers_artifact(key: str) -> str:
    return f"answers/{key}.json"


# --------------------------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Answers as recorded
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedChunk:
    """A chunk the prompt got (``evaluate.run.RetrievedLike``); ``text`` is not recorded."""

    chunk_id: str
    doc_id: str
    text: str = ""


@dataclass(frozen=True)
class RecordedAnswer:
    """One golden case's answer, as scoring reads it (``evaluate.run.AnswerLike``)."""

    case_id: str
    text: str
    retrieved: tuple[RecordedChunk, ...]
    #: Document ids of the ranking the retrieval metrics read (≥ the prompt's chunks).
    ranked_doc_ids: tuple[str, ...]
    total_ms: float
    #: The best retrieval score of the ranking (None: nothing retrieved).
    top_score: float | None

    @classmethod
    def from_answer(cls, case_id: str, answer: AnswerLike) -> RecordedAnswer:
        hits = getattr(answer, "ranked", None) or answer.retrieved
        scores = [float(hit.score) for hit in hits if hasattr(hit, "score")]
        return cls(
            case_id=case_id,
            text=answer.text,
            retrieved=tuple(RecordedChunk(c.chunk_id, c.doc_id, c.text) for c in answer.retrieved),
            ranked_doc_ids=tuple(answer.ranked_doc_ids),
            total_ms=float(answer.total_ms),
            top_score=max(scores) if scores else None,
        )

    def to_record(self) -> dict[str, Any]:
        """JSON-ready, without chunk texts."""
        return {
            "case_id": self.case_id,
            "text": self.text,
            "chunks": [[c.chunk_id, c.doc_id] for c in self.retrieved],
            "ranked_doc_ids": list(self.ranked_doc_ids),
            "total_ms": self.total_ms,
            "top_score": self.top_score,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], texts: Mapping[str, str]) -> RecordedAnswer:
        """Back from :meth:`to_record`, each chunk's text from ``texts`` (KeyError: missing)."""
        top = record["top_score"]
        return cls(
            case_id=str(record["case_id"]),
            text=str(record["text"]),
            retrieved=tuple(
                RecordedChunk(str(cid), str(did), texts[str(cid)]) for cid, did in record["chunks"]
            ),
            ranked_doc_ids=tuple(str(d) for d in record["ranked_doc_ids"]),
            total_ms=float(record["total_ms"]),
            top_score=None if top is None else float(top),
        )


def answer_golden(
    pipeline: RagPipeline,
    golden: GoldenSet,
    *,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[RecordedAnswer]:
    """Every golden question answered through ``pipeline`` as its item's principal, batched
    (``evaluate.run.answer_items``), in golden-set order."""
    total, done = len(golden.items), 0

    def answer_batch(questions: Sequence[str], principal: Principal) -> list[Any]:
        nonlocal done
        answers = list(pipeline.answer_many(questions, principal=principal))
        done += len(answers)
        if progress is not None:
            progress(done, total)
        return answers

    answered = answer_items(golden, answer_batch, batch_size=batch_size)
    return [
        RecordedAnswer.from_answer(item.id, answer)
        for item, answer in zip(golden.items, answered, strict=True)
    ]


@dataclass(frozen=True)
class SideAnswers:
    """One side's answers and where they came from."""

    #: The answer key (None: evaluated without reuse bookkeeping).
    key: str | None
    answers: tuple[RecordedAnswer, ...]
    generated: int
    reused: int
    #: The run holding ``answers/<key>.json``; None: this evaluation's own run.
    source_run_id: str | None = None

    def reused_here(self) -> SideAnswers:
        """The same answers for the other side of this evaluation (same key): none generated."""
        return replace(self, generated=0, reused=len(self.answers))


# --------------------------------------------------------------------------------------------
# Finding and recording
# --------------------------------------------------------------------------------------------


def es_chunk_texts(client: Elasticsearch, index_name: str) -> ChunkTexts:
    """Chunk texts by id from one physical index (ids not found are left out)."""

    def fetch(chunk_ids: Sequence[str]) -> dict[str, str]:
        texts: dict[str, str] = {}
        ids = sorted(set(chunk_ids))
        for start in range(0, len(ids), 1000):
            response = client.mget(index=index_name, ids=ids[start : start + 1000], source=["text"])
            for doc in response["docs"]:
                if doc.get("found"):
                    texts[str(doc["_id"])] = str((doc.get("_source") or {}).get("text", ""))
        return texts

    return fetch


@dataclass(frozen=True)
class FoundAnswers:
    key: str
    run_id: str
    answers: tuple[RecordedAnswer, ...]


class UnusableRecord(ValueError):
    """A recorded set that cannot stand in for answering (the message says why)."""


def parse_recorded(
    data: Mapping[str, Any], key: str, golden: GoldenSet, chunk_texts: ChunkTexts
) -> tuple[RecordedAnswer, ...]:
    """The answers of a recorded file, in golden order, or :class:`UnusableRecord`."""
    if data.get("format") != ANSWERS_FORMAT or data.get("key") != key:
        raise UnusableRecord(f"format {data.get('format')!r} / key {data.get('key')!r}")
    by_id = {str(r["case_id"]): r for r in data.get("cases", [])}
    wanted = [item.id for item in golden.items]
    if sorted(by_id) != sorted(wanted):
        raise UnusableRecord(f"{len(by_id)} recorded cases for {len(wanted)} golden items")
    chunk_ids = [str(cid) for r in by_id.values() for cid, _ in r["chunks"]]
    texts = chunk_texts(chunk_ids) if chunk_ids else {}
    missing = sorted(set(chunk_ids) - set(texts))
    if missing:
        raise UnusableRecord(f"{len(missing)} chunks not in the index (first: {missing[0]})")
    return tuple(RecordedAnswer.from_record(by_id[case_id], texts) for case_id in wanted)


class AnswerStore:
    """The experiment's recorded answer sets: found by key, read back whole."""

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        chunk_texts: ChunkTexts,
        *,
        max_runs: int = MAX_RUNS_SEARCHED,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.chunk_texts = chunk_texts
        self.max_runs = max_runs

    def source_runs(self, key: str) -> list[str]:
        """Runs holding ``answers/<key>.json`` by their tags, newest tagging run first."""
        found: list[tuple[int, str]] = []
        for side in SIDES:
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{key_tag(side)}` = '{key}'",
                order_by=["attributes.start_time DESC"],
                max_results=self.max_runs,
            )
            for run in runs:
                source = run.data.tags.get(source_tag(side))
                if source:
                    found.append((int(run.info.start_time or 0), source))
        ordered: list[str] = []
        for _, source in sorted(found, key=lambda item: -item[0]):
            if source not in ordered:
                ordered.append(source)
        return ordered

    def find(
        self, key: str, golden: GoldenSet, *, log: Callable[[str], None] = logger.info
    ) -> FoundAnswers | None:
        """The newest usable recorded set for ``key`` (None: none, or none usable: each
        rejected one is logged with why)."""
        from mlflow.exceptions import MlflowException

        for run_id in self.source_runs(key):
            try:
                data = self._download(run_id, key)
                answers = parse_recorded(data, key, golden, self.chunk_texts)
            except (MlflowException, OSError) as exc:  # a deleted run's or moved artifact
                log(f"recorded answers {key[:12]} of run {run_id} not readable: {exc}")
                continue
            except (UnusableRecord, KeyError, TypeError, ValueError) as exc:
                log(f"recorded answers {key[:12]} of run {run_id} not reused: {exc}")
                continue
            return FoundAnswers(key, run_id, answers)
        return None

    def _download(self, run_id: str, key: str) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="llmops-answers-") as folder:
            path = self.client.download_artifacts(run_id, answers_artifact(key), folder)
            return json.loads(Path(path).read_text(encoding="utf-8"))


def answers_document(
    key: str, inputs: AnswerInputs, bundle: RagBundle, answers: Iterable[RecordedAnswer]
) -> dict[str, Any]:
    """The recorded file: the key, its inputs (for reading, not for lookup) and the cases."""
    return {
        "format": ANSWERS_FORMAT,
        "key": key,
        "inputs": {"bundle_key": bundle.key(), **vars(inputs)},
        "bundle": bundle.describe(),
        "cases": [answer.to_record() for answer in answers],
    }


@dataclass
class AnswerReuse:
    """What one evaluation needs to key, find and record its sides' answers.

    ``enabled`` False (``reuse_answers: false``): every side is generated (and still recorded,
    so a later evaluation may reuse it).
    """

    inputs: AnswerInputs
    store: AnswerStore
    enabled: bool = True

    @classmethod
    def on_index(
        cls,
        es_client: Elasticsearch,
        index_name: str,
        golden: GoldenSet,
        client: MlflowClient,
        experiment_id: str,
        *,
        enabled: bool = True,
    ) -> AnswerReuse:
        """Reuse for an evaluation of ``golden`` on the physical index ``index_name``: its
        version read now, the installed answer path's code digest, the experiment's records."""
        inputs = AnswerInputs(
            golden_digest=golden.version,
            index_name=index_name,
            index_version=index_version(es_client, index_name),
            code_digest=code_digest(),
        )
        store = AnswerStore(client, experiment_id, es_chunk_texts(es_client, index_name))
        return cls(inputs, store, enabled)

    def key(self, bundle: RagBundle) -> str:
        return self.inputs.key(bundle)

    def find(
        self, bundle: RagBundle, golden: GoldenSet, *, log: Callable[[str], None] = logger.info
    ) -> FoundAnswers | None:
        if not self.enabled:
            return None
        if golden.version != self.inputs.golden_digest:
            raise ValueError("the golden set is not the one the answer inputs were made for")
        return self.store.find(self.key(bundle), golden, log=log)


def record_side_answers(
    run: RunHandle,
    side: str,
    bundle: RagBundle,
    answers: SideAnswers,
    inputs: AnswerInputs,
    *,
    logged: set[str],
) -> None:
    """Tag ``run`` with the key and source of ``side``'s answers; log ``answers/<key>.json``
    when they were generated in this evaluation (once per key: both sides may share one).
    The file goes before the tags, so a tag never points at a file that is not there yet."""
    if answers.key is None:
        return
    if answers.source_run_id is None and answers.key not in logged:
        run.log_json(
            answers_document(answers.key, inputs, bundle, answers.answers),
            answers_artifact(answers.key),
        )
        logged.add(answers.key)
    run.log(
        metrics={
            f"answers.{side}.generated": float(answers.generated),
            f"answers.{side}.reused": float(answers.reused),
        },
        tags={
            **inputs.as_tags(),
            key_tag(side): answers.key,
            source_tag(side): answers.source_run_id or run.run_id,
        },
    )
