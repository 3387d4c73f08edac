"""Golden sets: questions with relevant document ids (and reference answers), versioned by digest.

Why a content digest as the version: an evaluation is only comparable with another on the same
golden set. ``version`` is :func:`llmops_dagster.qa.qa_digest` (a canonical rendering, so
re-formatting or re-ordering the file does not change it, while any edit to a question, answer
or label does). The digest is logged with every evaluation (MLflow dataset input) so two scores
can be checked for comparability.

Formats: the project's QA JSONL (``data/golden/qa.jsonl``, read by
:func:`llmops_dagster.qa.load_qa_jsonl`: id, question, reference_answer, relevant_doc_ids, type,
and optionally ``groups``: the asker's groups, so the case is answered as that principal and can
only retrieve what it may read) and BEIR folders (corpus.jsonl, queries.jsonl,
qrels/<split>.tsv): retrieval-only items with graded relevance and no reference answers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_dagster.config import PROJECT_ROOT
from llmops_dagster.qa import QAFileError, QAItem, load_qa_jsonl, qa_digest

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_GOLDEN_PATH = PROJECT_ROOT / "data" / "golden" / "qa.jsonl"


class GoldenSetError(QAFileError):
    """A golden set is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class GoldenSet:
    """Items + identity. ``version`` is the content digest; ``path`` where it was read from."""

    items: tuple[QAItem, ...]
    name: str
    version: str
    path: Path | None = None
    format: str = "qa_jsonl"

    @classmethod
    def from_items(
        cls,
        items: Iterable[QAItem],
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
        return cls(items, name, qa_digest(items), path, format)

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


def load_golden_jsonl(
    path: Path | str = DEFAULT_GOLDEN_PATH, *, name: str | None = None
) -> GoldenSet:
    """A QA JSONL golden set (:func:`llmops_dagster.qa.load_qa_jsonl`: errors name file:line);
    reference answers are optional (retrieval-only items)."""
    path = Path(path)
    try:
        items = load_qa_jsonl(path)
    except QAFileError as exc:
        raise GoldenSetError(str(exc)) from exc
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
        QAItem(
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
        return load_golden_jsonl(path, **kwargs)
    raise GoldenSetError(f"unknown golden set format {format!r} (expected qa_jsonl or beir)")


def reference_token_budget(tokenizer: Any, references: Iterable[str], percentile: float) -> int:
    """The ``percentile`` of the reference answers' lengths in ``tokenizer``'s tokens, rounded
    up: an answer budget sized to the task (a longer answer cannot score better against a
    one-sentence reference, and each token costs the same on CPU)."""
    import math

    import numpy as np

    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references]
    if not lengths:
        raise ValueError("no reference answers to size an answer budget from")
    return max(1, math.ceil(float(np.percentile(lengths, percentile))))
