"""The golden set is big enough to decide and honest: every question names documents that
exist, numbers in a numeric answer occur in its documents, nothing is copied from training."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter

import pytest

from llmops_dagster.config import PROJECT_ROOT
from llmops_dagster.evaluate.golden import load_golden
from llmops_dagster.sources.source_config import load_sources_config

pytestmark = pytest.mark.unit

SAMPLE = PROJECT_ROOT / "data" / "sample"
_NUMBER_RE = re.compile(r"\d+(?:[.,:]\d+)*")


def _corpus_texts() -> dict[str, str]:
    """doc id → raw text: files by path, export records by their own id (as normalize.py)."""
    texts: dict[str, str] = {}
    for path in sorted(SAMPLE.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(SAMPLE).as_posix()
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            for record in json.loads(raw):
                texts[f"fs:{rel}#{record['id']}"] = json.dumps(record, ensure_ascii=False)
        elif path.suffix == ".csv":
            for row in csv.DictReader(raw.splitlines()):
                texts[f"fs:{rel}#{row['id']}"] = " ".join(row.values())
        else:
            texts[f"fs:{rel}"] = raw
    return texts


def test_golden_set_is_big_enough_and_covers_every_document() -> None:
    golden = load_golden()
    assert len(golden) == 212 and golden.has_reference_answers
    ids = [item.id for item in golden.items]
    assert len(set(ids)) == 212
    questions = [item.question.strip().lower() for item in golden.items]
    assert len(set(questions)) == 212
    corpus = _corpus_texts()
    cited = Counter(doc for item in golden.items for doc in item.relevant_doc_ids)
    assert set(cited) <= set(corpus), sorted(set(cited) - set(corpus))
    files = {doc.split("#")[0] for doc in corpus}
    assert {doc.split("#")[0] for doc in cited} == files  # every file has questions


def test_each_question_is_asked_by_someone_who_may_read_its_documents() -> None:
    """The asker's groups (``groups``) match the audiences in the repository's sources.yaml:
    public questions cite public documents only, and a confidential question is asked by a
    member of its document's group (else its case could never retrieve the answer)."""
    fs = load_sources_config(PROJECT_ROOT / "sources.yaml").filesystem
    assert fs is not None
    for item in load_golden().items:
        for doc in item.relevant_doc_ids:
            audience = fs.audience_for(doc.removeprefix("fs:").split("#")[0])
            assert item.principal.can_read(audience), (item.id, doc, audience)
            if not item.groups:
                assert audience == ["public"], (item.id, doc)


def test_numbers_of_numeric_answers_occur_in_the_cited_documents() -> None:
    corpus = _corpus_texts()
    for item in load_golden().items:
        if item.type != "numeric":
            continue
        text = " ".join(corpus[doc] for doc in item.relevant_doc_ids)
        for number in _NUMBER_RE.findall(item.reference_answer or ""):
            assert number in text, (item.id, number)


def test_no_golden_question_is_a_training_question() -> None:
    train = [
        json.loads(line)["question"].strip().lower()
        for line in (PROJECT_ROOT / "data" / "train" / "qa.jsonl").read_text().splitlines()
        if line.strip()
    ]
    golden = {item.question.strip().lower() for item in load_golden().items}
    assert golden.isdisjoint(train)
