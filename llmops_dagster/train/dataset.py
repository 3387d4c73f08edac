"""Fine-tuning data: QA pairs + context → chat-formatted (prompt, completion) examples.

Why the same prompt as serving: the adapter should learn to answer *this* prompt (fenced
chunks, ``[chunk:ID]`` citations), so each example is rendered with the RAG prompt template and
the model's own chat template; the completion is everything the chat template puts after the
generation prompt (the answer plus the end-of-turn token), so the loss teaches the model to stop.

Where context comes from (``context_fn``): at pipeline time a retriever over the live index
(:func:`retriever_context_fn`, the question only — what serving will see — asked as a principal
that defaults to public, so confidential text enters training data only when a group is
configured on purpose); without an index,
:func:`corpus_context_fn` reads the labelled relevant documents from the corpus folder and picks
their passages that best overlap the question and reference answer ("oracle" context, also
what the benchmark's held-out metric uses). With no ``context_fn`` the examples have no context.

Who may read what the adapter learns: it is served to everyone who uses its bundle, so the
builder takes an *audience* (a principal; default public) and keeps only the items it may read
— an item's ``groups`` are the groups its text came through (a reviewed feedback answer keeps
its asker's), readable only by someone in all of them — and reports how many it left out.

Why plain lists and not HF ``datasets``: ``datasets`` is not a dependency of this project and
a few thousand examples fit in memory; the trainer tokenises lists directly.

The QA items are read by :func:`llmops_dagster.qa.load_qa_jsonl` (the golden set's format and
loader; training needs every item's ``reference_answer``). ``digest`` is the SHA-256 of the
canonical JSONL of the built examples (split included), so it changes when the QA file, the
context, the prompt or the chat template changes; ``source_digest`` is the QA items' own
:func:`llmops_dagster.qa.qa_digest`, the same rule as the golden set's version.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from llmops_dagster.access import AccessError, Principal
from llmops_dagster.config import PROJECT_ROOT
from llmops_dagster.files import atomic_write_text
from llmops_dagster.qa import QAItem, load_qa_jsonl, qa_digest
from llmops_dagster.rag.answer import HitLike, Retriever, content_tokens
from llmops_dagster.rag.prompts import PromptTemplate, load_prompt
from llmops_dagster.text.chunking import make_chunk_id

DEFAULT_TRAIN_QA = PROJECT_ROOT / "data" / "train" / "qa.jsonl"
DEFAULT_SEED = 13


class DatasetError(ValueError):
    """The QA items cannot make a dataset (too few, none the audience may read, no answer)."""


class ChatTokenizer(Protocol):
    """The one tokenizer method used here (every HF tokenizer with a chat template has it)."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class ContextPassage:
    """A context chunk (matches :class:`~llmops_dagster.rag.answer.HitLike`)."""

    chunk_id: str
    doc_id: str
    text: str
    title: str = ""
    score: float = 0.0


ContextFn = Callable[[QAItem], Sequence[HitLike]]


@dataclass(frozen=True)
class SFTExample:
    id: str
    question: str
    prompt: str
    completion: str
    reference_answer: str
    context_chunk_ids: tuple[str, ...]
    cited_chunk_ids: tuple[str, ...]


@dataclass
class SFTDataset:
    """Train/validation examples plus what MLflow needs to identify them."""

    train: list[SFTExample]
    validation: list[SFTExample]
    digest: str
    source: str
    source_digest: str
    prompt_name: str
    prompt_version: str
    seed: int
    val_fraction: float
    #: The training audience the items were checked against, and how many it could not read.
    audience: tuple[str, ...] = ("public",)
    dropped: int = 0

    def canonical_jsonl(self) -> str:
        return canonical_jsonl(self.train, self.validation)

    def write_jsonl(self, path: Path) -> Path:
        """The canonical JSONL at ``path``, written atomically (a reader — the training step,
        a second run with the same digest — never sees half a file)."""
        return atomic_write_text(path, self.canonical_jsonl())

    def summary(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "source": self.source,
            "source_digest": self.source_digest,
            "n_train": len(self.train),
            "n_validation": len(self.validation),
            "prompt_name": self.prompt_name,
            "prompt_version": self.prompt_version,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "audience": ",".join(self.audience),
            "n_dropped_audience": self.dropped,
        }


def retriever_context_fn(
    retriever: Retriever,
    *,
    k: int = 3,
    mode: str = "hybrid_rrf",
    principal: Principal | None = None,
) -> ContextFn:
    """Context as serving sees it: the retriever's top ``k`` for the question alone, among the
    documents ``principal`` may read (None: public only — the filter is in the search)."""
    # Passed only when given, like ``filters`` in rag.answer: the HybridRetriever reads None as
    # public, and principal-less retrievers (a benchmark's in-memory index) still fit.
    extra: dict[str, Any] = {"principal": principal} if principal is not None else {}

    def context(item: QAItem) -> Sequence[HitLike]:
        return list(retriever.search(item.question, mode=mode, k=k, **extra))

    return context


def split_passages(text: str, *, max_words: int = 120) -> list[str]:
    """Paragraph-packed passages of at most ~``max_words`` words (long paragraphs are cut)."""
    passages: list[str] = []
    current: list[str] = []
    count = 0
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        if not words:
            continue
        while len(words) > max_words:
            if current:
                passages.append("\n\n".join(current))
                current, count = [], 0
            passages.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if count + len(words) > max_words and current:
            passages.append("\n\n".join(current))
            current, count = [], 0
        current.append(" ".join(words) if "\n" not in paragraph else paragraph.strip())
        count += len(words)
    if current:
        passages.append("\n\n".join(current))
    return passages


def load_corpus_passages(
    corpus_dir: Path, *, source: str = "fs", max_words: int = 120
) -> dict[str, list[ContextPassage]]:
    """Passages per ``doc_id`` (``<source>:<relative path>[#record]``) of a documents folder.

    Uses the pipeline's own extractors, so ids match ``llmops.documents``; unreadable files are
    skipped (they have no passages).
    """
    from llmops_dagster.documents.extract import ExtractionError, extract_file

    by_doc: dict[str, list[ContextPassage]] = {}
    for path in sorted(p for p in corpus_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(corpus_dir).as_posix()
        try:
            extracted = extract_file(path.read_bytes(), relative)
        except ExtractionError:
            continue
        for doc in extracted:
            doc_id = f"{source}:{relative}{doc.key_suffix}"
            by_doc[doc_id] = [
                # The chunk contract's id recipe (docs/CONTRACTS.md), for ids of the same shape.
                ContextPassage(make_chunk_id(doc_id, i, text), doc_id, text, doc.title)
                for i, text in enumerate(split_passages(doc.text, max_words=max_words))
            ]
    return by_doc


def corpus_context_fn(
    corpus_dir: Path | str,
    *,
    k: int = 2,
    max_words: int = 120,
    use_reference: bool = True,
    audience: Callable[[str], Sequence[str]] | None = None,
    principal: Principal | None = None,
) -> ContextFn:
    """Oracle context: the passages of each item's relevant documents that overlap most with
    its question (and reference answer, unless ``use_reference=False``).

    This reads files, not the index, so it applies the audience itself: ``audience`` (a
    relative path → groups rule, ``FilesystemSourceConfig.audience_for``) is required, and
    documents that ``principal`` (None: public) may not read are left out before anything is
    picked. Without the rule nothing says which files are confidential, so there is no
    "unfiltered" default: the call is refused.
    """
    if audience is None:
        raise AccessError(
            f"corpus_context_fn({corpus_dir}) needs audience=, the rule that says who may read "
            "each file (e.g. default_sources_config(folder).filesystem.audience_for): without "
            "it confidential files would be handed out as training context"
        )
    passages = load_corpus_passages(Path(corpus_dir), max_words=max_words)
    who = principal or Principal.public()
    prefix = len("fs:")
    passages = {
        doc_id: ps
        for doc_id, ps in passages.items()
        if who.can_read(audience(doc_id[prefix:].split("#", 1)[0]))
    }

    def context(item: QAItem) -> Sequence[HitLike]:
        query = set(content_tokens(item.question))
        if use_reference:
            query |= set(content_tokens(item.reference_answer or ""))
        candidates: list[ContextPassage] = []
        for doc_id in item.relevant_doc_ids:
            candidates.extend(passages.get(doc_id, ()))
            if "#" not in doc_id:  # a whole export named: all of its records qualify
                candidates.extend(
                    p for key, ps in passages.items() if key.startswith(f"{doc_id}#") for p in ps
                )
        scored = [
            (len(query & set(content_tokens(f"{p.title} {p.text}"))), i, p)
            for i, p in enumerate(candidates)
        ]
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [
            ContextPassage(p.chunk_id, p.doc_id, p.text, p.title, float(score))
            for score, _, p in scored[:k]
        ]

    return context


def _completion_suffix(
    tokenizer: ChatTokenizer, messages: list[dict[str, str]], prompt: str, answer: str
) -> str:
    """What the chat template appends after the generation prompt for an assistant turn."""
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": answer}], tokenize=False
    )
    if isinstance(full, str) and full.startswith(prompt):
        return full[len(prompt) :]
    eos = getattr(tokenizer, "eos_token", None) or ""
    return answer + eos


def build_example(
    item: QAItem,
    *,
    tokenizer: ChatTokenizer,
    prompt: PromptTemplate,
    context: Sequence[HitLike] = (),
    cite: bool = True,
) -> SFTExample:
    """One chat-formatted example; with ``cite`` the answer cites the context chunks that come
    from the item's relevant documents (what we want the model to learn to do)."""
    messages = prompt.messages(item.question, context)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(rendered, str):
        raise DatasetError("tokenizer.apply_chat_template(tokenize=False) did not return text")
    relevant = set(item.relevant_doc_ids)
    cited = tuple(
        c.chunk_id
        for c in context
        if cite and (c.doc_id in relevant or c.doc_id.split("#")[0] in relevant)
    )[:2]
    answer = (item.reference_answer or "").strip()
    if cited:
        answer = f"{answer} " + " ".join(f"[chunk:{cid}]" for cid in cited)
    return SFTExample(
        id=item.id,
        question=item.question,
        prompt=rendered,
        completion=_completion_suffix(tokenizer, messages, rendered, answer),
        reference_answer=item.reference_answer or "",
        context_chunk_ids=tuple(c.chunk_id for c in context),
        cited_chunk_ids=cited,
    )


def split_items(
    items: Sequence[QAItem], *, val_fraction: float = 0.2, seed: int = DEFAULT_SEED
) -> tuple[list[QAItem], list[QAItem]]:
    """Deterministic split: shuffle the id-sorted items with ``seed``; at least one of each."""
    if not 0 < val_fraction < 1:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(items) < 2:
        raise DatasetError("need at least 2 QA items for a train/validation split")
    ordered = sorted(items, key=lambda item: item.id)
    random.Random(seed).shuffle(ordered)
    n_val = min(len(ordered) - 1, max(1, round(len(ordered) * val_fraction)))
    validation = sorted(ordered[:n_val], key=lambda item: item.id)
    train = sorted(ordered[n_val:], key=lambda item: item.id)
    return train, validation


def canonical_jsonl(train: Iterable[SFTExample], validation: Iterable[SFTExample]) -> str:
    lines = []
    for split, examples in (("train", train), ("validation", validation)):
        for example in examples:
            row = {"split": split, **asdict(example)}
            lines.append(json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines) + "\n"


def build_sft_dataset(
    qa: Path | str | Sequence[QAItem] = DEFAULT_TRAIN_QA,
    *,
    tokenizer: ChatTokenizer,
    prompt: PromptTemplate | None = None,
    context_fn: ContextFn | None = None,
    val_fraction: float = 0.2,
    seed: int = DEFAULT_SEED,
    cite: bool = True,
    audience: Principal | None = None,
) -> SFTDataset:
    """Build the fine-tuning dataset from a QA JSONL (default ``data/train/qa.jsonl``).

    Only the items ``audience`` (the training audience; None: public) may read are used
    (``dropped`` counts the others). Never point this at the golden evaluation set: training
    on it makes the gate meaningless.
    """
    reader = audience or Principal.public()
    template = prompt or load_prompt()
    if isinstance(qa, (str, Path)):
        source = str(qa)
        items = load_qa_jsonl(qa, require_reference_answer=True)
    else:
        items = list(qa)
        source = "<in-memory>"
    if not items:
        raise DatasetError(f"{source}: no QA items")
    unanswered = [item.id for item in items if not item.reference_answer]
    if unanswered:
        raise DatasetError(f"{source}: items without a reference_answer: {unanswered[:5]}")
    readable = [item for item in items if reader.can_read_all(item.groups)]
    if len(readable) < 2 <= len(items):
        raise DatasetError(
            f"{source}: {len(readable)} of {len(items)} QA items are readable by the training "
            f"audience {','.join(reader.visible_groups)}; a train/validation split needs 2"
        )
    train_items, val_items = split_items(readable, val_fraction=val_fraction, seed=seed)

    def build(item: QAItem) -> SFTExample:
        context = list(context_fn(item)) if context_fn else []
        return build_example(item, tokenizer=tokenizer, prompt=template, context=context, cite=cite)

    train = [build(item) for item in train_items]
    validation = [build(item) for item in val_items]
    digest = hashlib.sha256(canonical_jsonl(train, validation).encode("utf-8")).hexdigest()
    return SFTDataset(
        train=train,
        validation=validation,
        digest=digest,
        source=source,
        source_digest=qa_digest(items),
        prompt_name=template.name,
        prompt_version=template.version,
        seed=seed,
        val_fraction=val_fraction,
        audience=tuple(reader.visible_groups),
        dropped=len(items) - len(readable),
    )
