"""A golden set for a new corpus: candidates drafted from the indexed chunks, then reviewed.

A new corpus has no golden set, and evaluation cannot decide anything without one. So the
``golden_candidates`` asset drafts questions, one-sentence reference answers and the relevant
document (the source chunk's ``doc_id``) from the active chunks, with the template drafter
fine-tuning uses (:func:`llmops_dagster.train.raft.draft_items`: deterministic by seed, spread
over documents, one item per chunk). The rules are the same ones, counted:

- **Audience**: only chunks the chosen audience may read are drafted from (a candidate's
  ``groups`` are the ones its text came through, so evaluation asks it as that audience);
- **No restatement**: a candidate restating an item already in the golden set
  (:class:`~llmops_dagster.train.raft.GoldenOverlapRule`) or an earlier candidate is dropped.

Nothing drafted is scored until a person accepts it: ``llmops-dagster golden list|accept|
reject`` (:class:`GoldenReview`). An accepted candidate is appended to the golden QA JSONL
(:func:`llmops_dagster.qa.append_qa_item`, the append the feedback review uses), so the set's
digest changes and the evaluation inputs sensor re-evaluates the champion on it.

Where the candidates live: one JSONL file in the datasets folder (``golden_candidates.jsonl``),
one QA line per candidate plus its review fields. It is a draft of a QA file and is reviewed
beside the golden set, by whoever keeps that set: a diffable file in the format of the set it
feeds needs no database and reads without the pipeline running (the feedback review keeps its
decisions in the serving store only because the answers it reviews are there). Drafting again
keeps every decision: decided candidates stay as they are and are not proposed again; only the
pending ones are replaced.

The generator: with a ``question_drafter`` (the asset's ``drafter: generator``), the configured
generator writes each sampled candidate's question, checked, the template's kept where a draft
fails (:mod:`llmops_dagster.evaluate.golden_drafter`; counted). A 135M generator writes worse
questions than the templates, so templates stay the default.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from llmops_dagster.access import Principal
from llmops_dagster.evaluate.golden_drafter import DraftRequest, GeneratorDrafts
from llmops_dagster.files import atomic_write_text, file_lock
from llmops_dagster.qa import QAFileError, QAItem, append_qa_item, parse_qa_jsonl
from llmops_dagster.train.raft import (
    ChunkRecord,
    DraftedItem,
    DraftReport,
    draft_items,
    spread_sample,
)

Status = Literal["pending", "accepted", "rejected"]
#: A drafted golden item's ``type`` and how its id starts (the rest hashes chunk and sentence).
ITEM_TYPE = "drafted-golden"
ID_PREFIX = "gd-"
#: The candidates file, in the datasets folder.
CANDIDATES_FILE = "golden_candidates.jsonl"
DEFAULT_MAX_ITEMS = 40
#: Keys a candidates line carries besides the QA item's.
_REVIEW_KEYS = ("status", "reviewer", "decided_at")


class GoldenReviewError(ValueError):
    """A review that cannot be applied; nothing was written. The message says why."""


@dataclass(frozen=True)
class GoldenCandidate:
    """A drafted golden item and where its review stands."""

    item: QAItem
    status: Status = "pending"
    reviewer: str | None = None
    decided_at: str | None = None

    @property
    def id(self) -> str:
        return self.item.id

    def to_dict(self) -> dict[str, Any]:
        return {
            **json.loads(self.item.to_line()),
            "status": self.status,
            "reviewer": self.reviewer,
            "decided_at": self.decided_at,
        }


@dataclass(frozen=True)
class GoldenDraft:
    """What drafting produced, and what it left out (each count for a stated reason)."""

    candidates: list[GoldenCandidate]
    report: DraftReport
    #: Drafted again but already decided (kept as decided, not proposed again).
    already_decided: int = 0
    #: What the generator drafter did (None: templates only).
    generator: GeneratorDrafts | None = None

    @property
    def n_documents(self) -> int:
        return len({d for c in self.candidates for d in c.item.relevant_doc_ids})

    def metadata(self) -> dict[str, int]:
        return {
            "n_candidates": len(self.candidates),
            "n_dropped_golden_overlap": self.report.dropped_golden_overlap,
            "n_dropped_duplicate": self.report.dropped_duplicate,
            "n_chunks_dropped_audience": self.report.dropped_audience,
            "n_chunks_seen": self.report.chunks_seen,
            "n_already_decided": self.already_decided,
            "n_documents": self.n_documents,
        } | (
            {}
            if self.generator is None
            else {
                "n_generator_drafts": self.generator.n_generator_drafts,
                "n_template_fallbacks": self.generator.n_template_fallbacks,
            }
        )


def draft_golden_candidates(
    chunks: Iterable[ChunkRecord],
    *,
    audience: Principal | None = None,
    golden: Sequence[QAItem] = (),
    decided: Iterable[str] = (),
    max_items: int = DEFAULT_MAX_ITEMS,
    seed: int = 13,
    question_drafter: Callable[[Sequence[DraftRequest]], GeneratorDrafts] | None = None,
) -> GoldenDraft:
    """Up to ``max_items`` (>= 1) pending candidates from the chunks ``audience`` (None: public) may
    read, spread over documents, none restating a ``golden`` item or another candidate; a
    candidate whose id is in ``decided`` (reviewed before) is counted and left out.
    ``question_drafter``: rewrites the sampled candidates' questions (the generator drafter),
    the template's kept where it returns one."""
    if max_items < 1:
        raise GoldenReviewError(f"max_items must be >= 1, not {max_items}")
    # Every chunk drafted first, the decided ones left out, then the sample: a rejected
    # candidate must not leave its place in the sample empty.
    report = draft_items(chunks, reader=audience, golden=golden, per_chunk=1, seed=seed)
    decided_ids = set(decided)
    pool: list[DraftedItem] = []
    skipped = 0
    for drafted in report.items:
        raft = drafted.item
        item = replace(
            raft,
            id=ID_PREFIX + raft.id.split("-", 1)[1],
            type=ITEM_TYPE,
            extra={**raft.extra, "drafted_from": "templates"},
        )
        if item.id in decided_ids:
            skipped += 1
            continue
        pool.append(replace(drafted, item=item))
    if len(pool) > max_items:
        pool = spread_sample(pool, max_items, seed)
    pool = sorted(pool, key=lambda d: d.item.id)
    drafts = None
    if question_drafter is not None and pool:
        # Only the sample is sent to the generator: the pool may hold thousands of chunks.
        drafts = question_drafter(
            [DraftRequest(d.sentence, d.oracle.title, d.item.question) for d in pool]
        )
        pool = [
            replace(d, item=replace(d.item, question=question, extra={
                **d.item.extra, "drafted_from": "generator" if generated else "templates"}))
            for d, question, generated in zip(
                pool, drafts.questions, drafts.from_generator, strict=True
            )
        ]  # fmt: skip
    out = [GoldenCandidate(d.item) for d in pool]
    return GoldenDraft(
        candidates=out,
        report=report,
        already_decided=skipped,
        generator=drafts,
    )


class GoldenReview:
    """The candidates file (``candidates_path``) and the decisions that move its items into the
    golden QA JSONL (``golden_path``). Every change holds the file's lock and replaces it
    atomically: a reviewer and a materialization never lose each other's writes."""

    def __init__(self, candidates_path: Path | str, golden_path: Path | str) -> None:
        self.path = Path(candidates_path)
        self.golden_path = Path(golden_path)
        self._lock = self.path.with_name(self.path.name + ".lock")

    # --- the file ----------------------------------------------------------------------------
    def _read(self) -> list[GoldenCandidate]:
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8")
        try:
            items = parse_qa_jsonl(text, self.path, require_reference_answer=True)
        except QAFileError as exc:
            raise GoldenReviewError(str(exc)) from exc
        out = []
        for item in items:
            extra = dict(item.extra)
            review = {k: extra.pop(k, None) for k in _REVIEW_KEYS}
            status = review["status"] or "pending"
            if status not in ("pending", "accepted", "rejected"):
                raise GoldenReviewError(f"{self.path}: {item.id} has an unknown status {status!r}")
            out.append(
                GoldenCandidate(
                    replace(item, extra=extra), status, review["reviewer"], review["decided_at"]
                )
            )
        return out

    def _write(self, candidates: Sequence[GoldenCandidate]) -> None:
        lines = [json.dumps(c.to_dict(), ensure_ascii=False) for c in candidates]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(line + "\n" for line in lines))

    # --- drafting ------------------------------------------------------------------------------
    def decided_ids(self) -> set[str]:
        return {c.id for c in self._read() if c.status != "pending"}

    def replace_pending(self, pending: Sequence[GoldenCandidate]) -> list[GoldenCandidate]:
        """Keep the decided candidates, replace the pending ones with ``pending`` (those decided
        meanwhile excluded); returns the file's candidates."""
        with file_lock(self._lock):
            decided = [c for c in self._read() if c.status != "pending"]
            ids = {c.id for c in decided}
            kept = [*decided, *(c for c in pending if c.id not in ids)]
            self._write(kept)
        return kept

    # --- review ------------------------------------------------------------------------------
    def candidates(self, status: Status | None = "pending") -> list[GoldenCandidate]:
        """The candidates (``None``: all), in file order."""
        return [c for c in self._read() if status is None or c.status == status]

    def candidate(self, candidate_id: str) -> GoldenCandidate:
        for found in self._read():
            if found.id == candidate_id:
                return found
        raise GoldenReviewError(
            f"unknown golden candidate id {candidate_id!r} (not in {self.path}): "
            "`llmops-dagster golden list` shows the pending ones"
        )

    def _decide(
        self, candidate_id: str, status: Status, reviewer: str | None
    ) -> tuple[GoldenCandidate, bool]:
        with file_lock(self._lock):
            rows = self._read()
            found = self.candidate(candidate_id)
            if found.status != "pending":
                raise GoldenReviewError(
                    f"golden candidate {candidate_id} was already {found.status} on "
                    f"{found.decided_at}"
                    + (f" by {found.reviewer}" if found.reviewer else "")
                    + (
                        f": it is in {self.golden_path}; edit that file to take it out"
                        if found.status == "accepted"
                        else ""
                    )
                )
            appended = False
            if status == "accepted":
                try:
                    appended = append_qa_item(self.golden_path, found.item)
                except QAFileError as exc:
                    raise GoldenReviewError(f"golden set (LLMOPS_GOLDEN): {exc}") from exc
            decided = replace(
                found,
                status=status,
                reviewer=reviewer,
                decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            self._write([decided if c.id == candidate_id else c for c in rows])
        return decided, appended

    def accept(
        self, candidate_id: str, *, reviewer: str | None = None
    ) -> tuple[GoldenCandidate, str]:
        """Append the candidate to the golden set; returns it and the set's new digest. A
        candidate decided before is refused (saying when and how)."""
        from llmops_dagster.evaluate.golden import load_golden

        decided, _ = self._decide(candidate_id, "accepted", reviewer)
        # The digest the evaluation inputs sensor fingerprints (jobs/sensors.py).
        return decided, load_golden(self.golden_path).version

    def reject(self, candidate_id: str, *, reviewer: str | None = None) -> GoldenCandidate:
        """Record that the candidate is not used (it is not drafted again)."""
        return self._decide(candidate_id, "rejected", reviewer)[0]
