"""The fine-tuning mix: the hand-written (and reviewed) training QA set plus RAFT items drafted
from the indexed chunks (:mod:`llmops_dagster.train.raft`), as one SFT dataset.

Why one function: the asset stays thin and the rules that keep the evaluation honest — drafted
only from what the training audience may read, nothing that restates a golden item, the
hand-written items' audience check — run in one place a unit test can call without Dagster.

Versions: the dataset's ``digest`` (the canonical JSONL of every built example, split, context
and prompt included) is what the adapter records. ``source_digest`` is
:func:`llmops_dagster.qa.qa_digest` of the QA items handed in (the hand-written file, items the
audience may not read included, plus the drafted ones), the same rule as the golden set's
version; ``mix_digest`` is that of the items that entered the dataset, which
:meth:`TrainingMix.write_qa_jsonl` writes as a QA file so a reviewer can read what was drafted
(never an item the training audience may not read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_dagster.access import Principal
from llmops_dagster.files import atomic_write_text
from llmops_dagster.qa import QAItem, load_qa_jsonl, qa_digest
from llmops_dagster.rag.prompts import PromptTemplate
from llmops_dagster.train.dataset import (
    DEFAULT_SEED,
    ChatTokenizer,
    ContextFn,
    DatasetError,
    SFTDataset,
    build_sft_dataset,
)
from llmops_dagster.train.distractors import (
    SearchFn,
    context_fn,
    retriever_search,
    with_distractors,
)
from llmops_dagster.train.raft import (
    ID_PREFIX,
    ITEM_TYPE,
    ChunkRecord,
    DraftReport,
    GoldenOverlapRule,
    RaftError,
    draft_items,
)

#: Drafted items in the demo's mix: twice the 60 hand-written items, about 60% of what the
#: sample corpus yields at one item per public chunk (194 candidates), so every document is
#: represented and training sees mostly corpus-grounded examples. Tests pass a handful.
DEFAULT_DRAFTED_ITEMS = 120
#: Distractors come from this many hits per question (at least :data:`DISTRACTOR_DEPTH`):
#: same-document hits are skipped, so the search looks deeper than the k chunks a prompt holds
#: (the sample corpus's longest document has 12 chunks).
DISTRACTOR_SEARCH_FACTOR = 5
DISTRACTOR_DEPTH = 20


@dataclass
class TrainingMix:
    """The built dataset and what went into it, each count for a stated reason."""

    dataset: SFTDataset
    drafts: DraftReport
    #: Hand-written items in the file, and how many of them entered the dataset.
    handwritten_total: int
    handwritten_digest: str
    golden_digest: str
    drafted_requested: int
    drafted_seed: int
    #: The QA items that entered the dataset (readable by the training audience).
    items: tuple[QAItem, ...]

    @property
    def n_handwritten(self) -> int:
        return self.handwritten_total - self.dataset.dropped

    def write_qa_jsonl(self, path: Path) -> Path:
        """The QA items of the dataset (id order) as a QA JSONL file, atomically; its
        ``qa_digest`` is ``mix_digest``."""
        lines = [item.to_line() for item in sorted(self.items, key=lambda i: i.id)]
        return atomic_write_text(path, "\n".join(lines) + "\n")

    def metadata(self) -> dict[str, Any]:
        """Numbers as numbers: the dataset summary plus the drafting counts."""
        drafts = self.drafts
        drafted_ids = {d.item.id for d in drafts.items}
        validation_drafted = sum(1 for e in self.dataset.validation if e.id in drafted_ids)
        return {
            **self.dataset.summary(),
            "n_handwritten": self.n_handwritten,
            "n_drafted": len(drafts.items),
            "n_validation_drafted": validation_drafted,
            "drafted_items": self.drafted_requested,
            "drafted_seed": self.drafted_seed,
            "n_drafted_candidates": drafts.candidates,
            "n_chunks_seen": drafts.chunks_seen,
            "n_chunks_dropped_audience": drafts.dropped_audience,
            "n_chunks_no_sentence": drafts.skipped_no_sentence,
            "n_dropped_golden_overlap": drafts.dropped_golden_overlap,
            "n_dropped_golden_question": drafts.dropped_golden_question,
            "n_dropped_golden_answer": drafts.dropped_golden_answer,
            "n_dropped_duplicate": drafts.dropped_duplicate,
            "n_drafted_short_context": drafts.short_context,
            "golden_overlap_rule": drafts.rule.describe(),
            "golden_digest": self.golden_digest,
            "handwritten_digest": self.handwritten_digest,
            "drafted_digest": qa_digest(d.item for d in drafts.items),
            "mix_digest": qa_digest(self.items),
        }


def distractor_search(
    retriever: Any, *, mode: str, k: int, depth: int = DISTRACTOR_DEPTH
) -> SearchFn:
    """The search distractors come from: the pipeline's retriever and mode, looking
    :data:`DISTRACTOR_SEARCH_FACTOR` × ``k`` (at least ``depth``) hits deep."""
    return retriever_search(retriever, mode=mode, k=max(depth, DISTRACTOR_SEARCH_FACTOR * k))


def build_training_mix(
    handwritten: Path | str | Sequence[QAItem],
    *,
    tokenizer: ChatTokenizer,
    prompt: PromptTemplate | None = None,
    chunks: Sequence[ChunkRecord] = (),
    golden: Sequence[QAItem] = (),
    golden_digest: str | None = None,
    search: SearchFn | None = None,
    k: int = 3,
    drafted_items: int = DEFAULT_DRAFTED_ITEMS,
    drafted_seed: int = DEFAULT_SEED,
    per_chunk: int = 1,
    rule: GoldenOverlapRule | None = None,
    audience: Principal | None = None,
    reader: Principal | None = None,
    fallback_context: ContextFn | None = None,
    val_fraction: float = 0.2,
    seed: int = DEFAULT_SEED,
) -> TrainingMix:
    """Hand-written items + up to ``drafted_items`` RAFT items → one SFT dataset.

    ``audience``: the training audience (None: public); hand-written items it may not read are
    left out (``dataset.dropped``). ``reader`` (default ``audience``; within it) is who drafting
    and every search read as: drafted only from ``chunks`` it may read, distractors from
    ``search`` as it (``k - 1`` per item, :func:`distractors.with_distractors`). ``golden``: the
    evaluation's items; drafted candidates that restate one (``rule``) are dropped.
    ``fallback_context``: the hand-written items' context (the serving pipeline's). The
    train/validation split (``val_fraction``, ``seed``) is over the whole mix.
    """
    if drafted_items < 0:
        raise RaftError(f"drafted_items must be >= 0, not {drafted_items}")
    training = audience or Principal.public()
    who = reader or training
    beyond = sorted(who.groups - training.groups)
    if beyond:
        raise RaftError(
            f"reader groups {beyond} are beyond the training audience "
            f"{training.visible_groups}: the adapter would learn text its audience may not read"
        )
    if isinstance(handwritten, (str, Path)):
        source = str(handwritten)
        written = load_qa_jsonl(handwritten, require_reference_answer=True)
    else:
        source, written = "<in-memory>", list(handwritten)
    if drafted_items:
        if search is None:
            raise RaftError("drafting needs a search for the distractors (search=)")
        drafts = draft_items(
            chunks,
            reader=who,
            golden=golden,
            rule=rule,
            per_chunk=per_chunk,
            max_items=drafted_items,
            seed=drafted_seed,
        )
        drafts = with_distractors(drafts, search, k=k, reader=who, seed=drafted_seed)
    else:
        drafts = DraftReport(items=[], rule=rule or GoldenOverlapRule())
    drafted = [d.item for d in drafts.items]
    clash = sorted({i.id for i in written} & {i.id for i in drafted})
    if clash:
        raise DatasetError(
            f"{source}: ids {clash[:5]} collide with drafted items (ids starting with {ID_PREFIX})"
        )
    items = [*written, *drafted]
    dataset = build_sft_dataset(
        items,
        tokenizer=tokenizer,
        prompt=prompt,
        context_fn=context_fn(drafts, fallback=fallback_context),
        val_fraction=val_fraction,
        seed=seed,
        audience=training,
    )
    dataset.source = f"{source} + {len(drafted)} {ITEM_TYPE} (raft)"
    return TrainingMix(
        dataset=dataset,
        drafts=drafts,
        handwritten_total=len(written),
        handwritten_digest=qa_digest(written),
        golden_digest=golden_digest if golden_digest is not None else qa_digest(golden),
        drafted_requested=drafted_items,
        drafted_seed=drafted_seed,
        items=tuple(item for item in items if training.can_read_all(item.groups)),
    )
