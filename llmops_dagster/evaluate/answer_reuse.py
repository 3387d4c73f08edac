"""Answer reuse: a bundle's answers to a golden set, recorded once and scored again.

Why: generating is what an evaluation spends its time on (a 135M model on CPU needs seconds per
answer), and most evaluations ask a bundle that has already answered the very same questions on
the very same index — the base model on every evaluation until there is a champion, an
unchanged champion on every candidate. Its answers cannot have changed when nothing they
depend on has, so they are read back instead of generated; the scores are always recomputed
(the metrics, the judge or the policy may have changed since).

What the answers depend on is hashed into the **answer key**
(:mod:`llmops_dagster.evaluate.answer_key`); only an exact key is reused.

Where: the evaluation run that generated a side's answers logs them as ``answers/<key>.json``
and every run tags ``answers.<side>.key`` (the key of the answers it scored) and
``answers.<side>.source_run`` (the run holding that file: itself when it generated them). The
lookup searches the experiment for either side's key tag, newest first. The file holds no chunk
text — restricted documents' text stays in the index, which filters it by audience — only the
ids: the texts are read back from the physical index by id, which the index version pins.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_dagster.evaluate.answer_key import (
    ANSWERS_FORMAT,
    AnswerInputs,
    code_digest,
    index_version,
)
from llmops_dagster.evaluate.golden import GoldenSet
from llmops_dagster.evaluate.run import AnswerLike, answer_items, answer_tokens, optional_int

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from mlflow import MlflowClient

    from llmops_dagster.access import Principal
    from llmops_dagster.rag.bundle import RagBundle
    from llmops_dagster.rag.pipeline import RagPipeline
    from llmops_dagster.tracking.runs import RunHandle

logger = logging.getLogger(__name__)

#: The evaluation's two sides, as tags and metadata name them.
SIDES = ("candidate", "baseline")
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
    #: What the answer cost in tokens (None: recorded before tokens were; not compared).
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

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
            prompt_tokens=answer_tokens(answer, "prompt_tokens"),
            completion_tokens=answer_tokens(answer, "completion_tokens"),
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
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
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
            prompt_tokens=optional_int(record.get("prompt_tokens")),
            completion_tokens=optional_int(record.get("completion_tokens")),
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
