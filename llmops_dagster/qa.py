"""Question/answer items: one type, one loader and one digest for every QA JSONL file.

The golden set (``data/golden/qa.jsonl``, what evaluation scores), the training set
(``data/train/qa.jsonl``, what fine-tuning learns) and the items the review steps append to
them (``serving/review.py`` for feedback, ``evaluate/golden_candidates.py`` for drafted
golden items, both with :func:`append_qa_item`) are the same format, read here and nowhere
else. One JSON object per line:

- ``id`` (required; unique in the file) and ``question`` (required);
- ``reference_answer``: the answer to score or learn (required where the reader needs one:
  training, ``require_reference_answer=True``; a retrieval-only golden item may omit it);
- ``relevant_doc_ids``: the documents that answer it (``fs:handbook/expenses.md``);
- ``type``: a free label (``factual``, ``numeric``, ``feedback``);
- ``groups``: the asker's groups. Evaluation asks the question as that principal (it can only
  retrieve what they may read); a training item is text that came through those groups, so
  only a training audience in all of them may learn it. Sorted, without ``public`` (everyone
  reads public; listing it changes nothing);
- ``relevance_grades``: doc id → integer grade (graded qrels, as BEIR sets carry);
- any other key (``source_trace_id``: the served answer a feedback item came from) is kept in
  :attr:`QAItem.extra`.

**Digest** (:func:`qa_digest`, a set's version): the sha256 of the *canonical* JSONL — each
item's :meth:`QAItem.to_record` with sorted keys and fixed separators, items in id order. So
re-formatting or re-ordering a file does not change it, while any edit to a question, answer,
label or audience does. ``groups`` and ``relevance_grades`` enter the record only when
non-empty, so sets without them kept their digest when those fields were introduced. ``extra``
keys are not part of it: no reader computes anything from them. The golden set's version, the
training set's ``source_digest``, the review step's reports and the training-set sensor's
cursor are all this digest, so "the set changed" means the same thing everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from llmops_dagster.access import PUBLIC, AccessError, Principal, check_group
from llmops_dagster.files import atomic_write_text, file_lock

#: The principal name a QA item's question is asked under (its groups vary per item).
QA_PRINCIPAL = "golden"

#: The keys the format defines; any other key of a line goes to ``extra``.
FIELDS = frozenset(
    {"id", "question", "reference_answer", "relevant_doc_ids", "type", "groups", "relevance_grades"}
)


class QAFileError(ValueError):
    """A QA file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class QAItem:
    """One question with what answers it (see the module docstring for each field)."""

    id: str
    question: str
    _: KW_ONLY
    relevant_doc_ids: tuple[str, ...] = ()
    reference_answer: str | None = None
    type: str = ""
    #: Graded relevance (doc id → grade); empty for binary labels.
    relevance_grades: Mapping[str, int] = field(default_factory=dict)
    #: The asker's groups (sorted, without ``public``; empty = public documents only).
    groups: tuple[str, ...] = ()
    #: Keys of the line the format does not define (not part of the digest).
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        """Who asks this question: retrieval for the case is filtered by these groups."""
        return Principal(QA_PRINCIPAL, frozenset(self.groups))

    def to_record(self) -> dict[str, Any]:
        """The canonical, JSON-ready form: what the digest is computed over."""
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

    def to_line(self) -> str:
        """One JSONL line (no newline) as a file holds it: the record plus the extra keys."""
        return json.dumps({**self.to_record(), **self.extra}, ensure_ascii=False)


def canonical_jsonl(items: Iterable[QAItem]) -> str:
    """One canonical JSON line per item, in id order."""
    lines = [
        json.dumps(item.to_record(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        for item in sorted(items, key=lambda i: i.id)
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def qa_digest(items: Iterable[QAItem]) -> str:
    """sha256 hex of :func:`canonical_jsonl`: a QA set's version."""
    return hashlib.sha256(canonical_jsonl(items).encode("utf-8")).hexdigest()


def qa_file_digest(path: Path | str) -> str:
    """:func:`qa_digest` of the items of a QA JSONL file (raises :class:`QAFileError`)."""
    return qa_digest(load_qa_jsonl(path))


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class _LineError(ValueError):
    """What is wrong with one line (the loader adds the file and line number)."""


def _text(row: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = row.get(key)
    if value is None or value == "":
        if required:
            raise _LineError(f"missing {key}")
        return None if value is None else ""
    if key == "id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _LineError(f"{key} must be a string, got {value!r}")
    return value


def _doc_ids(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(d, str) and d for d in value):
        raise _LineError(f"relevant_doc_ids must be a list of document ids, got {value!r}")
    return tuple(value)


def _groups(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise _LineError(f"groups must be a list of group names, got {value!r}")
    try:
        return tuple(sorted({check_group(g) for g in value} - {PUBLIC}))
    except AccessError as exc:
        raise _LineError(str(exc)) from exc


def _grades(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(g, int) and not isinstance(g, bool) for g in value.values()
    ):
        raise _LineError(f"relevance_grades must map document ids to integer grades: {value!r}")
    return dict(sorted(value.items()))


def _parse_row(row: Any, *, require_reference_answer: bool) -> QAItem:
    """One decoded line → :class:`QAItem`; :class:`_LineError` saying what is wrong."""
    if not isinstance(row, dict):
        raise _LineError(f"expected a JSON object, got {type(row).__name__}")
    missing = [k for k in ("id", "question") if row.get(k) in (None, "")]
    if require_reference_answer and row.get("reference_answer") in (None, ""):
        missing.append("reference_answer")
    if missing:
        raise _LineError(f"missing {', '.join(missing)}")
    return QAItem(
        id=str(_text(row, "id", required=True)),
        question=str(_text(row, "question", required=True)),
        relevant_doc_ids=_doc_ids(row.get("relevant_doc_ids")),
        reference_answer=_text(row, "reference_answer", required=require_reference_answer),
        type=_text(row, "type", required=False) or "",
        relevance_grades=_grades(row.get("relevance_grades")),
        groups=_groups(row.get("groups")),
        extra={k: v for k, v in row.items() if k not in FIELDS},
    )


def load_qa_jsonl(path: Path | str, *, require_reference_answer: bool = False) -> list[QAItem]:
    """The items of a QA JSONL file, in file order (blank lines skipped; a file with none gives
    ``[]``: the reader decides whether that is an error).

    Raises :class:`QAFileError` naming ``file:line`` for a line that is not a JSON object, lacks
    ``id``/``question`` (or ``reference_answer`` when required), has a field of the wrong type,
    an invalid group name, or repeats an earlier id.
    """
    path = Path(path)
    if not path.is_file():
        raise QAFileError(f"QA file {path} does not exist")
    return parse_qa_jsonl(
        path.read_text(encoding="utf-8"), path, require_reference_answer=require_reference_answer
    )


def parse_qa_jsonl(
    text: str, path: Path | str, *, require_reference_answer: bool = False
) -> list[QAItem]:
    """:func:`load_qa_jsonl` of ``text`` (what ``path``, named in errors, holds or will hold)."""
    items: list[QAItem] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise QAFileError(f"{path}:{number}: not JSON ({exc})") from exc
        try:
            item = _parse_row(row, require_reference_answer=require_reference_answer)
        except _LineError as exc:
            raise QAFileError(f"{path}:{number}: {exc}") from exc
        if item.id in first_line:
            raise QAFileError(
                f"{path}:{number}: duplicate id {item.id!r} (first on line {first_line[item.id]})"
            )
        first_line[item.id] = number
        items.append(item)
    return items


# --------------------------------------------------------------------------------------------
# Appending (the review steps: feedback and drafted golden items)
# --------------------------------------------------------------------------------------------


def append_qa_item(
    path: Path | str,
    item: QAItem,
    *,
    require_reference_answer: bool = False,
    create: bool = False,
) -> bool:
    """Add ``item`` as one line at the end of the QA file ``path`` unless its id is there
    already; ``True`` when added.

    The file is read with the loader that reads the set, so a malformed file (or one the new
    line would make malformed) is refused with :class:`QAFileError` before anything is
    written. The new file replaces the old one atomically under a lock beside it
    (:mod:`llmops_dagster.files`): a reader sees the old set or the new one, and two reviewers
    appending at once both land. ``create``: a missing file starts empty (else refused).
    """
    path = Path(path)
    if path.is_dir():
        raise QAFileError(f"{path} is a folder (a BEIR set?): items append to a QA JSONL file")
    with file_lock(path.with_name(path.name + ".lock")):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
        elif create:
            text = ""
        else:
            raise QAFileError(f"QA file {path} does not exist")
        existing = parse_qa_jsonl(text, path, require_reference_answer=require_reference_answer)
        if any(e.id == item.id for e in existing):
            return False
        if text and not text.endswith("\n"):
            text += "\n"
        text += item.to_line() + "\n"
        parse_qa_jsonl(text, path, require_reference_answer=require_reference_answer)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return True
