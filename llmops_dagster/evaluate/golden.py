"""Golden sets: questions with relevant document ids (and reference answers), versioned by digest.

Why a content digest as the version: an evaluation is only comparable with another on the same
golden set. ``version`` is the sha256 of a *canonical* JSONL rendering (sorted keys, fixed
separators, items in id order), so re-formatting or re-ordering the file does not change it,
while any edit to a question, answer or label does. The digest is logged with every evaluation
(MLflow dataset input) so two scores can be checked for comparability.

Formats: the project's QA JSONL (``data/golden/qa.jsonl``: id, question, reference_answer,
relevant_doc_ids, type, and optionally ``groups``: the asker's groups, so the case is answered
as that principal and can only retrieve what it may read) and BEIR folders (corpus.jsonl,
queries.jsonl, qrels/<split>.tsv): retrieval-only items with graded relevance and no reference
answers.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_dagster.access import AccessError, Principal, check_group
from llmops_dagster.config import PROJECT_ROOT

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_GOLDEN_PATH = PROJECT_ROOT / "data" / "golden" / "qa.jsonl"
#: The principal name golden questions are asked under (their groups vary per item).
GOLDEN_PRINCIPAL = "golden"


class GoldenSetError(ValueError):
    """A golden set file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class GoldenItem:
    """One labelled question. ``relevance_grades`` is empty for binary labels."""

    id: str
    question: str
    relevant_doc_ids: tuple[str, ...]
    reference_answer: str | None = None
    type: str = ""
    relevance_grades: Mapping[str, int] = field(default_factory=dict)
    #: The asker's groups (sorted; empty = an anonymous asker, public documents only).
    groups: tuple[str, ...] = ()

    @property
    def principal(self) -> Principal:
        """Who asks this question: retrieval for the case is filtered by these groups."""
        return Principal(GOLDEN_PRINCIPAL, frozenset(self.groups))

    def to_record(self) -> dict[str, Any]:
        """The canonical, JSON-ready form (what the digest is computed over)."""
        record: dict[str, Any] = {
            "id": self.id,
            "question": self.question,
            "reference_answer": self.reference_answer,
            "relevant_doc_ids": list(self.relevant_doc_ids),
            "type": self.type,
        }
        if self.relevance_grades:
            record["relevance_grades"] = dict(sorted(self.relevance_grades.items()))
        if self.groups:  # absent when public, so older sets keep their digest
            record["groups"] = list(self.groups)
        return record


def canonical_jsonl(items: Iterable[GoldenItem]) -> str:
    """One canonical JSON line per item, in id order."""
    lines = [
        json.dumps(item.to_record(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        for item in sorted(items, key=lambda i: i.id)
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def golden_digest(items: Iterable[GoldenItem]) -> str:
    """sha256 hex of :func:`canonical_jsonl`: the golden set's version."""
    return hashlib.sha256(canonical_jsonl(items).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GoldenSet:
    """Items + identity. ``version`` is the content digest; ``path`` where it was read from."""

    items: tuple[GoldenItem, ...]
    name: str
    version: str
    path: Path | None = None
    format: str = "qa_jsonl"

    @classmethod
    def from_items(
        cls,
        items: Iterable[GoldenItem],
        *,
        name: str,
        path: Path | None = None,
        format: str = "qa_jsonl",
    ) -> GoldenSet:
        items = tuple(items)
        ids = [i.id for i in items]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise GoldenSetError(f"golden set {name}: duplicate ids {duplicates[:5]}")
        return cls(items, name, golden_digest(items), path, format)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_reference_answers(self) -> bool:
        return bool(self.items) and all(i.reference_answer for i in self.items)

    @property
    def short_version(self) -> str:
        return self.version[:12]

    def subset(self, n: int) -> GoldenSet:
        """The first ``n`` items (file order) as a golden set of its own (own digest)."""
        return GoldenSet.from_items(
            self.items[:n], name=f"{self.name}[:{n}]", path=self.path, format=self.format
        )

    def to_dataframe(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for item in self.items:
            record = item.to_record()
            record["relevant_doc_ids"] = json.dumps(record["relevant_doc_ids"])
            record.pop("relevance_grades", None)
            rows.append(record)
        columns = ["id", "question", "reference_answer", "relevant_doc_ids", "type"]
        return pd.DataFrame(rows, columns=columns)


def _groups(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise TypeError(f"groups must be a list of group names, got {value!r}")
    return tuple(sorted({check_group(g) for g in value}))


def load_qa_jsonl(path: Path | str = DEFAULT_GOLDEN_PATH, *, name: str | None = None) -> GoldenSet:
    """The project's QA format: one JSON object per line with id, question, reference_answer,
    relevant_doc_ids (doc ids such as ``fs:handbook/expenses.md``), an optional type and
    optional ``groups`` (the asker's groups; absent = public documents only)."""
    path = Path(path)
    if not path.is_file():
        raise GoldenSetError(f"golden set file not found: {path}")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.append(
                GoldenItem(
                    id=str(row["id"]),
                    question=str(row["question"]),
                    relevant_doc_ids=tuple(str(d) for d in row.get("relevant_doc_ids") or ()),
                    reference_answer=row.get("reference_answer"),
                    type=str(row.get("type") or ""),
                    groups=_groups(row.get("groups")),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, AccessError) as exc:
            raise GoldenSetError(f"{path}:{number}: {type(exc).__name__}: {exc}") from exc
    return GoldenSet.from_items(items, name=name or path.stem, path=path, format="qa_jsonl")


def load_beir(
    folder: Path | str,
    *,
    split: str = "test",
    name: str | None = None,
    doc_id_prefix: str = "",
) -> GoldenSet:
    """A BEIR dataset folder: ``queries.jsonl`` (``_id``, ``text``) + ``qrels/<split>.tsv``
    (query-id, corpus-id, score; header line). Queries without a positive judgement are dropped
    (nothing to retrieve means no signal). ``doc_id_prefix`` maps corpus ids onto the index's
    ``doc_id`` scheme (e.g. ``"beir:"`` when the corpus was loaded as source ``beir``)."""
    folder = Path(folder)
    queries_path, qrels_path = folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"
    for needed in (queries_path, qrels_path):
        if not needed.is_file():
            raise GoldenSetError(f"BEIR folder {folder}: missing {needed.name}")
    grades: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(reader, start=1):
            if not row or (number == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # header
            try:
                query_id, corpus_id, score = row[0], row[1], int(row[2])
            except (IndexError, ValueError) as exc:
                raise GoldenSetError(f"{qrels_path}:{number}: bad qrels row {row!r}") from exc
            if score > 0:
                grades.setdefault(query_id, {})[f"{doc_id_prefix}{corpus_id}"] = score
    questions: dict[str, str] = {}
    for number, line in enumerate(queries_path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                questions[str(row["_id"])] = str(row["text"])
            except (json.JSONDecodeError, KeyError) as exc:
                raise GoldenSetError(f"{queries_path}:{number}: {exc}") from exc
    items = [
        GoldenItem(
            id=query_id,
            question=questions[query_id],
            relevant_doc_ids=tuple(sorted(doc_grades)),
            reference_answer=None,
            type="beir",
            relevance_grades=dict(sorted(doc_grades.items())),
        )
        for query_id, doc_grades in sorted(grades.items())
        if query_id in questions
    ]
    return GoldenSet.from_items(
        items, name=name or f"{folder.name}-{split}", path=folder, format="beir"
    )


def load_golden(
    source: Path | str | None = None, *, format: str = "auto", **kwargs: Any
) -> GoldenSet:
    """Load by configuration: a ``.jsonl`` file → QA JSONL, a folder → BEIR (``format`` forces
    one). ``None`` → the repository's default golden set."""
    path = Path(source) if source is not None else DEFAULT_GOLDEN_PATH
    kind = format if format != "auto" else ("beir" if path.is_dir() else "qa_jsonl")
    if kind == "beir":
        return load_beir(path, **kwargs)
    if kind == "qa_jsonl":
        return load_qa_jsonl(path, **kwargs)
    raise GoldenSetError(f"unknown golden set format {format!r} (expected qa_jsonl or beir)")
