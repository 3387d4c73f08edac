"""The review step between user feedback and the golden / training sets.

A *candidate* is a served answer that got at least one thumbs-down or a correction. Nothing a
user writes reaches evaluation or fine-tuning on its own: a reviewer accepts a candidate (with
the correction, or a better reference answer of their own) or rejects it, and the decision is
recorded in a ``reviews`` table kept in the serving store's SQLite file (beside the answers it
refers to; this module owns that table, :mod:`llmops_dagster.serving.answer_log` the others).

Where an accepted item goes. One item is written to the golden set *or* the training set, never
both: a question the adapter was trained on would then be scored by the evaluation that decides
whether the adapter is promoted, and that comparison would reward memorising it. ``to="auto"``
routes by a hash of the trace id (half to each, the same answer every time, so accepting twice
cannot split an item); ``golden`` / ``train`` choose explicitly. A golden item needs the
documents that answer it: by default those of the chunks the answer cited, else ``doc_ids``.

Accepting is idempotent: an item id already in the target file is not appended again, so a
crash between writing the file and recording the decision heals on the next ``accept``.

Who may read an item. A candidate carries its answer's audience (:mod:`llmops_dagster.serving.
disclosure`: the asker's groups and the retrieved passages'). An adapter is served to everyone
who may use its bundle, so the training set takes only what the *training audience* may read
(``LLMOPS_TRAIN_GROUPS``, default public): ``--to train`` on anything else is refused, saying
why, and ``auto`` sends it to the golden set instead (evaluation asks it with the asker's
groups). A training item from a restricted answer the training audience may read keeps its
``groups``, so the dataset builder can check it again. Outside the serving store — the
candidates JSONL and warehouse table, the asset's preview — a restricted candidate keeps its
row but its question, answer, correction, comments and documents are withheld
(:meth:`Candidate.published`); the review commands, which run on the server host beside the
store, show the full text.

Size (~490 lines, kept whole on purpose): one job, the review step between served feedback and
the two QA sets — candidates, accept/reject with the routing and audience rules above, the
appends, and writing the (withheld) candidates the asset publishes — all over one candidate type.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from llmops_dagster.access import PUBLIC, Principal
from llmops_dagster.files import atomic_write_text
from llmops_dagster.qa import QAFileError, QAItem, append_qa_item, qa_file_digest
from llmops_dagster.serving.answer_log import FeedbackRecord, ServingStore, now_iso
from llmops_dagster.serving.disclosure import (
    PUBLIC_AUDIENCE,
    audience_from_row,
    is_restricted,
    withheld,
)

Status = Literal["pending", "accepted", "rejected"]
Target = Literal["golden", "train"]
Route = Literal["auto", "golden", "train"]
ITEM_TYPE = "feedback"

REVIEWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    trace_id TEXT PRIMARY KEY,
    decision TEXT NOT NULL CHECK (decision IN ('accepted', 'rejected')),
    reviewer TEXT,
    reference_answer TEXT,
    relevant_doc_ids TEXT,
    target TEXT,
    item_id TEXT,
    decided_at TEXT NOT NULL
);
"""

#: Served answers the online evaluation (``serving_judgments``) scored low: each one a review
#: candidate with the reasons, beside the users' thumbs-down (this module owns the table).
JUDGMENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS judged_low (
    trace_id TEXT PRIMARY KEY,
    reasons TEXT NOT NULL,
    judge TEXT NOT NULL,
    judged_at TEXT NOT NULL
);
"""


class ReviewError(ValueError):
    """A review that cannot be applied; nothing was written. The message says why."""


@dataclass(frozen=True)
class Candidate:
    """A served answer users disagreed with, and where its review stands."""

    trace_id: str
    answered_at: str
    bundle_uri: str | None
    bundle_version: str | None
    question: str
    answer: str
    correction: str | None  # the most recent non-empty correction
    comments: list[str]
    thumbs_down: int
    thumbs_up: int
    cited_chunk_ids: list[str]
    cited_doc_ids: list[str]
    feedback_at: str  # the latest feedback update
    asker_groups: list[str] = field(default_factory=list)  # who asked (without "public")
    #: Who may read the answer (serving.disclosure): ["public"] or every group it came through.
    audience: list[str] = field(default_factory=lambda: list(PUBLIC_AUDIENCE))
    status: Status = "pending"
    reviewer: str | None = None
    decided_at: str | None = None
    target: str | None = None
    item_id: str | None = None
    #: Why the online evaluation flagged it ("faithfulness 0.20 < 0.5", …); empty: it did not.
    judged_low: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def restricted(self) -> bool:
        return is_restricted(self.audience)

    def published(self) -> Candidate:
        """The candidate as it may leave the serving store: a restricted one keeps its ids,
        counts and status, its texts replaced by a marker naming the audience and its
        documents (their ids name confidential files) left out."""
        if not self.restricted:
            return self
        mark = withheld(self.audience)
        return replace(
            self,
            question=mark,
            answer=mark,
            correction=mark if self.correction else None,
            comments=[mark for _ in self.comments],
            cited_doc_ids=[],
            judged_low=[mark for _ in self.judged_low],
        )


@dataclass(frozen=True)
class AcceptResult:
    candidate: Candidate
    item_id: str
    target: Target
    appended: bool  # False: the item was already in the file (accepted before)
    golden_path: Path
    golden_digest: str
    train_path: Path
    train_digest: str
    record: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # why ``auto`` chose the target, when it was not the hash's choice


def item_id_for(trace_id: str) -> str:
    """The golden/training item id of a trace: stable, short, and recognisable as feedback."""
    return f"fb-{trace_id.removeprefix('tr-')[:12]}"


def auto_target(trace_id: str) -> Target:
    """Half of the traces to each set, by a hash of the id (the same answer every time)."""
    return (
        "golden" if int(hashlib.sha256(trace_id.encode()).hexdigest()[:8], 16) % 2 == 0 else "train"
    )


def cited_doc_ids(answer: dict[str, Any]) -> list[str]:
    """Documents of the cited chunks, in citation order, each once."""
    doc_of = {c["chunk_id"]: c["doc_id"] for c in answer.get("retrieved") or []}
    docs: list[str] = []
    for chunk_id in answer.get("cited_chunk_ids") or []:
        doc = doc_of.get(chunk_id)
        if doc and doc not in docs:
            docs.append(doc)
    return docs


def golden_digest_of(path: Path) -> str:
    """The golden set's content digest (what the evaluation inputs sensor fingerprints)."""
    from llmops_dagster.evaluate.golden import load_golden

    return load_golden(path).version


def train_digest_of(path: Path) -> str:
    """The training QA file's digest (the SFT dataset's ``source_digest``, the training-set
    sensor's cursor: :func:`llmops_dagster.qa.qa_file_digest`); "" when missing."""
    return qa_file_digest(path) if path.is_file() else ""


class FeedbackReview:
    """Candidates from the serving store, and the accept / reject decisions on them."""

    def __init__(
        self,
        store_path: Path,
        golden_path: Path,
        train_path: Path,
        *,
        train_groups: Sequence[str] = (),
    ) -> None:
        self.store = ServingStore(Path(store_path))
        self.golden_path = Path(golden_path)
        self.train_path = Path(train_path)
        #: Who may read what the training set teaches (LLMOPS_TRAIN_GROUPS; empty: public).
        self.train_audience = Principal("training", frozenset(train_groups))
        with self._connect() as conn:
            conn.executescript(REVIEWS_SCHEMA)
            conn.executescript(JUDGMENTS_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.store.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    # --- candidates ------------------------------------------------------------------------
    def _reviews(self) -> dict[str, dict[str, Any]]:
        with self._connect() as conn:
            return {r["trace_id"]: dict(r) for r in conn.execute("SELECT * FROM reviews")}

    def _judged_low(self) -> dict[str, dict[str, Any]]:
        with self._connect() as conn:
            return {r["trace_id"]: dict(r) for r in conn.execute("SELECT * FROM judged_low")}

    def record_judged_low(self, reasons: dict[str, list[str]], judge: str) -> int:
        """Make the answers the online evaluation scored low review candidates (``reasons``:
        trace id → why); a re-judged answer's reasons replace its earlier ones. Trace ids this
        store never answered are ignored. Returns how many were recorded."""
        known = self.store.audiences(list(reasons))
        rows = [
            (t, json.dumps(r), judge, now_iso()) for t, r in sorted(reasons.items()) if t in known
        ]
        with self._connect() as conn:
            conn.executemany(
                "INSERT INTO judged_low (trace_id, reasons, judge, judged_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (trace_id) DO UPDATE SET reasons = excluded.reasons,"
                " judge = excluded.judge, judged_at = excluded.judged_at",
                rows,
            )
        return len(rows)

    def _candidate(
        self,
        trace_id: str,
        feedback: Sequence[FeedbackRecord],
        review: dict[str, Any] | None,
        judged: dict[str, Any] | None = None,
    ) -> Candidate | None:
        down = [f for f in feedback if f.rating == "down"]
        corrections = sorted(
            (f for f in feedback if f.correction and f.correction.strip()),
            key=lambda f: f.updated_at,
        )
        judged_low = (
            [f"judge ({judged['judge']}): {r}" for r in json.loads(judged["reasons"])]
            if judged
            else []
        )
        if not down and not corrections and not judged_low:
            return None
        answer = self.store.answer(trace_id)
        if answer is None:  # the store's foreign key keeps this from happening
            return None
        return Candidate(
            trace_id=trace_id,
            answered_at=answer["created_at"],
            bundle_uri=answer["bundle_uri"],
            bundle_version=answer["bundle_version"],
            question=answer["question"],
            answer=answer["answer"],
            correction=corrections[-1].correction.strip() if corrections else None,  # type: ignore[union-attr]
            comments=[f.comment for f in feedback if f.comment],
            thumbs_down=len(down),
            thumbs_up=sum(f.rating == "up" for f in feedback),
            cited_chunk_ids=list(answer["cited_chunk_ids"]),
            asker_groups=list(answer.get("asker_groups") or []),
            audience=audience_from_row(answer.get("audience"), answer.get("asker_groups") or []),
            cited_doc_ids=cited_doc_ids(answer),
            feedback_at=max(
                [f.updated_at for f in feedback] + ([judged["judged_at"]] if judged else [])
            ),
            status=review["decision"] if review else "pending",
            reviewer=review["reviewer"] if review else None,
            decided_at=review["decided_at"] if review else None,
            target=review["target"] if review else None,
            item_id=review["item_id"] if review else None,
            judged_low=judged_low,
        )

    def candidates(self, status: Status | None = None) -> list[Candidate]:
        """Every candidate (or those with ``status``), oldest feedback first."""
        by_trace: dict[str, list[FeedbackRecord]] = defaultdict(list)
        for record in self.store.feedback_since(None):
            by_trace[record.trace_id].append(record)
        reviews = self._reviews()
        judged = self._judged_low()
        found = [
            c
            for trace_id in sorted(set(by_trace) | set(judged))
            if (
                c := self._candidate(
                    trace_id,
                    by_trace.get(trace_id, []),
                    reviews.get(trace_id),
                    judged.get(trace_id),
                )
            )
            is not None
        ]
        found.sort(key=lambda c: (c.feedback_at, c.trace_id))
        return [c for c in found if status is None or c.status == status]

    def candidate(self, trace_id: str) -> Candidate:
        if self.store.answer(trace_id) is None:
            raise ReviewError(f"unknown trace id {trace_id!r}: the server never answered it")
        review = self._reviews().get(trace_id)
        judged = self._judged_low().get(trace_id)
        found = self._candidate(trace_id, self.store.feedback_for(trace_id), review, judged)
        if found is None:
            raise ReviewError(
                f"{trace_id} is not a feedback candidate: it has no thumbs-down, no correction "
                "and no low score from the online evaluation"
            )
        return found

    # --- decisions -------------------------------------------------------------------------
    def accept(
        self,
        trace_id: str,
        *,
        answer: str | None = None,
        reviewer: str | None = None,
        to: Route = "auto",
        doc_ids: Sequence[str] | None = None,
    ) -> AcceptResult:
        """Append the candidate as a QA item to its target set and record the decision."""
        candidate = self.candidate(trace_id)
        item_id = item_id_for(trace_id)
        if candidate.status == "accepted":
            # Already decided: report where it went, write nothing.
            return self._result(candidate, item_id, candidate.target or "golden", False, {})
        target, note = self._target(candidate, to)  # first: a refusal must not wait on --answer
        reference = (answer or "").strip() or candidate.correction
        if not reference:
            raise ReviewError(
                f"{trace_id} has no correction: give the reference answer with --answer"
            )
        relevant = [d for d in (doc_ids or candidate.cited_doc_ids) if d]
        if target == "golden" and not relevant:
            raise ReviewError(
                f"{trace_id} cited no document: a golden item needs the documents that answer "
                "it (--doc DOC_ID, repeatable)"
            )
        groups: tuple[str, ...] = ()
        # Asked by a member of restricted groups: the golden case is asked with the same
        # groups, or it could never retrieve its own answer (and would score a false miss).
        if target == "golden" and candidate.asker_groups:
            groups = tuple(candidate.asker_groups)
        # A training item the training audience may read, from a restricted answer: it keeps
        # its audience, so the dataset builder checks it again against its own audience.
        if target == "train" and candidate.restricted:
            groups = tuple(g for g in candidate.audience if g != PUBLIC)
        item = QAItem(
            id=item_id,
            question=candidate.question,
            reference_answer=reference,
            relevant_doc_ids=tuple(relevant),
            type=ITEM_TYPE,
            groups=tuple(sorted(set(groups) - {PUBLIC})),
            extra={"source_trace_id": trace_id},
        )
        record = json.loads(item.to_line())
        path = self.golden_path if target == "golden" else self.train_path
        appended = _append_item(path, item, target)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO reviews (trace_id, decision, reviewer, reference_answer,"
                " relevant_doc_ids, target, item_id, decided_at) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT (trace_id) DO UPDATE SET decision = excluded.decision,"
                " reviewer = excluded.reviewer, reference_answer = excluded.reference_answer,"
                " relevant_doc_ids = excluded.relevant_doc_ids, target = excluded.target,"
                " item_id = excluded.item_id, decided_at = excluded.decided_at",
                (trace_id, "accepted", reviewer, reference, json.dumps(relevant), target,
                 item_id, now_iso()),
            )  # fmt: skip
        return self._result(self.candidate(trace_id), item_id, target, appended, record, note)

    def _target(self, candidate: Candidate, to: Route) -> tuple[Target, str | None]:
        """Where ``to`` puts the candidate; refuses training data its audience may not read."""
        trainable = self.train_audience.can_read_all(candidate.audience)
        audience = ",".join(candidate.audience)
        training = ",".join(sorted(self.train_audience.groups)) or PUBLIC
        if to == "train" and not trainable:
            raise ReviewError(
                f"{candidate.trace_id} is readable only by {audience} (who asked, and the "
                f"documents it was answered from); the training audience ({training}, "
                "LLMOPS_TRAIN_GROUPS) cannot read it, and the adapter trained on it is served "
                "to that audience: accept it with --to golden (evaluated with the asker's groups)"
            )
        if to != "auto":
            return to, None
        target = auto_target(candidate.trace_id)
        if target == "train" and not trainable:
            return "golden", (
                f"routed to the golden set: readable only by {audience}, which the training "
                f"audience ({training}, LLMOPS_TRAIN_GROUPS) cannot read"
            )
        return target, None

    def reject(self, trace_id: str, *, reviewer: str | None = None) -> Candidate:
        """Record that the candidate is not used. An accepted one cannot be rejected: its item
        is already in a data set (remove it from the file by hand instead)."""
        candidate = self.candidate(trace_id)
        if candidate.status == "accepted":
            raise ReviewError(
                f"{trace_id} was accepted into the {candidate.target} set as {candidate.item_id}"
                " on " + str(candidate.decided_at) + ": edit that file to take it out"
            )
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO reviews (trace_id, decision, reviewer, decided_at) VALUES (?,?,?,?)"
                " ON CONFLICT (trace_id) DO UPDATE SET decision = excluded.decision,"
                " reviewer = excluded.reviewer, decided_at = excluded.decided_at",
                (trace_id, "rejected", reviewer, now_iso()),
            )
        return self.candidate(trace_id)

    def _result(
        self,
        candidate: Candidate,
        item_id: str,
        target: str,
        appended: bool,
        record: dict[str, Any],
        note: str | None = None,
    ) -> AcceptResult:
        return AcceptResult(
            candidate=candidate,
            item_id=item_id,
            target=target,  # type: ignore[arg-type]
            appended=appended,
            golden_path=self.golden_path,
            golden_digest=golden_digest_of(self.golden_path),
            train_path=self.train_path,
            train_digest=train_digest_of(self.train_path),
            record=record,
            note=note,
        )


def _append_item(path: Path, item: QAItem, target: Target) -> bool:
    """Append ``item`` to the target set unless its id is there (:func:`append_qa_item`);
    ``True`` when appended."""
    if target == "golden" and path.is_dir():
        raise ReviewError(
            f"the golden set {path} is a BEIR folder: feedback items need a QA JSONL "
            "golden set (LLMOPS_GOLDEN)"
        )
    try:
        # Training needs every item's answer; a golden item may be retrieval-only. A missing
        # training file starts empty; a missing golden set is a configuration error.
        return append_qa_item(
            path, item, require_reference_answer=target == "train", create=target == "train"
        )
    except QAFileError as exc:
        raise ReviewError(str(exc)) from exc


# --------------------------------------------------------------------------------------------
# Publishing the candidates (the feedback_candidates asset)
# --------------------------------------------------------------------------------------------

CANDIDATE_COLUMNS = {
    "trace_id": "VARCHAR",
    "status": "VARCHAR",
    "answered_at": "VARCHAR",
    "feedback_at": "VARCHAR",
    "bundle_uri": "VARCHAR",
    "bundle_version": "VARCHAR",
    "question": "VARCHAR",
    "answer": "VARCHAR",
    "correction": "VARCHAR",
    "comments": "VARCHAR[]",
    "thumbs_down": "INTEGER",
    "thumbs_up": "INTEGER",
    "cited_chunk_ids": "VARCHAR[]",
    "cited_doc_ids": "VARCHAR[]",
    "asker_groups": "VARCHAR[]",
    "audience": "VARCHAR[]",
    "text_withheld": "BOOLEAN",
    "reviewer": "VARCHAR",
    "decided_at": "VARCHAR",
    "target": "VARCHAR",
    "item_id": "VARCHAR",
    "judged_low": "VARCHAR[]",
}


def published_row(candidate: Candidate) -> dict[str, Any]:
    """A candidate as the JSONL and the warehouse table hold it (:meth:`Candidate.published`)."""
    return {**candidate.published().to_dict(), "text_withheld": candidate.restricted}


def write_candidates_jsonl(candidates: Sequence[Candidate], path: Path) -> Path:
    """All candidates, one JSON object per line, replaced atomically (a reader never sees half
    a file); restricted ones with their text withheld."""
    lines = [json.dumps(published_row(c), ensure_ascii=False, sort_keys=True) for c in candidates]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def write_candidates_table(con: Any, candidates: Sequence[Candidate], table: str) -> int:
    """Replace ``table`` (``schema.name``) with the candidates in one transaction (a reader sees
    the old rows or the new ones); returns the row count. Portable SQL: DuckDB or PostgreSQL."""
    from llmops_dagster.warehouse import replace_table

    rows = [[published_row(c)[name] for name in CANDIDATE_COLUMNS] for c in candidates]
    return replace_table(con, table, CANDIDATE_COLUMNS, rows)
