"""Fine-tuning dataset: deterministic split, stable digest, chat formatting, loss masking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmops_dagster.access import AccessError, Principal
from llmops_dagster.models.local import LoadedModel
from llmops_dagster.models.source import ModelSource
from llmops_dagster.qa import QAFileError, QAItem, load_qa_jsonl, qa_file_digest
from llmops_dagster.rag.prompts import load_prompt
from llmops_dagster.serving.review import train_digest_of
from llmops_dagster.sources.source_config import default_sources_config
from llmops_dagster.train.dataset import (
    DEFAULT_TRAIN_QA,
    ContextPassage,
    DatasetError,
    build_sft_dataset,
    corpus_context_fn,
    retriever_context_fn,
    split_items,
    split_passages,
)
from llmops_dagster.train.lora import (
    CompletionCollator,
    LoraParams,
    TrainingError,
    tokenize_example,
    train_lora,
)
from tests.support.stubs import ChatMLTokenizer

pytestmark = pytest.mark.unit


def _context(item: QAItem) -> list[ContextPassage]:
    return [ContextPassage(f"c-{item.id}", item.relevant_doc_ids[0], "some text", "T")]


def test_train_qa_file_loads() -> None:
    items = load_qa_jsonl(DEFAULT_TRAIN_QA)
    assert len(items) == 60 and len({i.id for i in items}) == 60
    assert all(i.question and i.reference_answer and i.relevant_doc_ids for i in items)


def test_split_is_deterministic_disjoint_and_seed_dependent() -> None:
    items = load_qa_jsonl(DEFAULT_TRAIN_QA)
    train, val = split_items(items, val_fraction=0.2, seed=13)
    again_train, again_val = split_items(list(reversed(items)), val_fraction=0.2, seed=13)
    assert [i.id for i in train] == [i.id for i in again_train]
    assert [i.id for i in val] == [i.id for i in again_val]
    assert len(val) == 12 and not {i.id for i in train} & {i.id for i in val}
    _, other_val = split_items(items, val_fraction=0.2, seed=14)
    assert {i.id for i in other_val} != {i.id for i in val}


def test_digest_is_stable_and_tracks_content() -> None:
    tok = ChatMLTokenizer()
    first = build_sft_dataset(tokenizer=tok, context_fn=_context)
    second = build_sft_dataset(tokenizer=tok, context_fn=_context)
    assert first.digest == second.digest and len(first.digest) == 64
    assert first.canonical_jsonl() == second.canonical_jsonl()
    assert build_sft_dataset(tokenizer=tok, context_fn=_context, seed=99).digest != first.digest
    assert build_sft_dataset(tokenizer=tok).digest != first.digest  # no context → other data
    assert first.prompt_version == load_prompt().version


def test_examples_use_the_chat_template_and_cite_relevant_chunks() -> None:
    dataset = build_sft_dataset(tokenizer=ChatMLTokenizer(), context_fn=_context)
    example = dataset.train[0]
    assert example.prompt.startswith("<|im_start|>system\n")
    assert example.prompt.endswith("<|im_start|>assistant\n")
    assert f'<chunk id="c-{example.id}">' in example.prompt
    assert example.completion.endswith("<|im_end|>\n")
    assert f"[chunk:c-{example.id}]" in example.completion
    assert example.completion.startswith(example.reference_answer)


def _audience(sample_dir: Path):
    return default_sources_config(sample_dir).filesystem.audience_for  # type: ignore[union-attr]


def test_corpus_context_comes_from_the_relevant_documents(sample_dir: Path) -> None:
    context = corpus_context_fn(sample_dir, k=2, audience=_audience(sample_dir))
    item = load_qa_jsonl(DEFAULT_TRAIN_QA)[0]
    passages = context(item)
    assert passages and all(p.doc_id in item.relevant_doc_ids for p in passages)
    assert "9 September 2020" in passages[0].text
    assert all(len(p.chunk_id) == 32 for p in passages)


def test_corpus_context_keeps_out_what_the_principal_may_not_read(sample_dir: Path) -> None:
    audience = default_sources_config(sample_dir).filesystem.audience_for  # type: ignore[union-attr]
    item = QAItem(
        "x1",
        "What is the salary range of band P4?",
        reference_answer="£68,500 to £84,000.",
        relevant_doc_ids=("fs:confidential/hr/salary-bands.md",),
    )
    assert corpus_context_fn(sample_dir, k=2, audience=audience)(item) == []
    sec = Principal("finetune", frozenset({"security"}))
    assert corpus_context_fn(sample_dir, k=2, audience=audience, principal=sec)(item) == []
    hr = Principal("finetune", frozenset({"hr"}))
    passages = corpus_context_fn(sample_dir, k=2, audience=audience, principal=hr)(item)
    assert [p.doc_id for p in passages] == ["fs:confidential/hr/salary-bands.md"] * 2
    assert "£68,500" in " ".join(p.text for p in passages)


def test_corpus_context_without_an_audience_rule_is_refused(sample_dir: Path) -> None:
    """Without the rule nothing says which files are confidential: no unfiltered default (it
    used to hand the salary bands to anyone)."""
    with pytest.raises(AccessError, match="needs audience="):
        corpus_context_fn(sample_dir, k=2)
    with pytest.raises(AccessError, match="needs audience="):
        corpus_context_fn(sample_dir, k=2, principal=Principal("hr-reader", frozenset({"hr"})))


def _grouped_qa(tmp_path: Path) -> Path:
    rows = [
        {"id": f"p{n}", "question": f"public question {n}?", "reference_answer": "yes"}
        for n in range(4)
    ]
    rows.append(
        {"id": "h1", "question": "Salary band P4?", "reference_answer": "68,500", "groups": ["hr"]}
    )
    rows.append(
        {"id": "hs", "question": "Both?", "reference_answer": "x", "groups": ["security", "hr"]}
    )
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _ids(dataset: Any) -> set[str]:
    return {e.id for e in dataset.train + dataset.validation}


def test_training_keeps_only_what_its_audience_may_read(tmp_path: Path) -> None:
    path = _grouped_qa(tmp_path)
    items = load_qa_jsonl(path)
    assert [i.groups for i in items][-2:] == [("hr",), ("hr", "security")]
    assert "groups" not in items[-1].extra
    tok = ChatMLTokenizer()
    public = build_sft_dataset(path, tokenizer=tok)  # default: the public audience
    assert _ids(public) == {"p0", "p1", "p2", "p3"}
    assert (public.dropped, public.audience) == (2, ("public",))
    assert public.summary()["n_dropped_audience"] == 2 and public.summary()["audience"] == "public"
    assert "68,500" not in public.canonical_jsonl()
    hr = build_sft_dataset(path, tokenizer=tok, audience=Principal("t", frozenset({"hr"})))
    assert _ids(hr) == {"p0", "p1", "p2", "p3", "h1"} and hr.dropped == 1
    both = Principal("t", frozenset({"hr", "security"}))
    assert build_sft_dataset(path, tokenizer=tok, audience=both).dropped == 0


def test_an_audience_that_can_read_too_little_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"h{n}", "question": "q", "reference_answer": "a", "groups": ["hr"]})
            + "\n"
            for n in range(3)
        )
    )
    with pytest.raises(DatasetError, match="0 of 3 QA items are readable by the training audience"):
        build_sft_dataset(path, tokenizer=ChatMLTokenizer())


@pytest.mark.parametrize(
    ("groups", "match"),
    [('"hr"', "groups must be a list"), ('["Human Resources"]', "invalid group name")],
)
def test_bad_item_groups_name_the_file_and_line(tmp_path: Path, groups: str, match: str) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"id": "a", "question": "q", "reference_answer": "r"}\n'
        f'{{"id": "b", "question": "q", "reference_answer": "r", "groups": {groups}}}\n'
    )
    with pytest.raises(QAFileError, match=rf"qa\.jsonl:2: .*{match}"):
        load_qa_jsonl(path)


def test_retriever_context_passes_the_principal_only_when_given() -> None:
    seen: list[dict[str, Any]] = []

    class Retriever:
        def search(self, query: str, **kwargs: Any) -> list[ContextPassage]:
            seen.append(kwargs)
            return []

    item = load_qa_jsonl(DEFAULT_TRAIN_QA)[0]
    retriever_context_fn(Retriever(), k=2, mode="bm25")(item)
    hr = Principal("finetune", frozenset({"hr"}))
    retriever_context_fn(Retriever(), k=2, mode="bm25", principal=hr)(item)
    # None reaches the HybridRetriever as "public only"; principal-less retrievers still fit.
    assert seen == [{"mode": "bm25", "k": 2}, {"mode": "bm25", "k": 2, "principal": hr}]


def test_split_passages_respects_the_word_budget() -> None:
    text = "\n\n".join(" ".join(["w"] * 50) for _ in range(5)) + "\n\n" + " ".join(["x"] * 300)
    passages = split_passages(text, max_words=120)
    assert all(len(p.split()) <= 120 for p in passages)
    assert sum(len(p.split()) for p in passages) == 550


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        ("not json\n", QAFileError, r"qa\.jsonl:1: not JSON"),
        ('{"id": "a", "question": "q"}\n', QAFileError, r"qa\.jsonl:1: missing reference_answer"),
        (
            '{"id": "a", "question": "q", "reference_answer": "r"}\n' * 2,
            QAFileError,
            r"qa\.jsonl:2: duplicate id 'a'",
        ),
        ("\n", DatasetError, r"qa\.jsonl: no QA items"),
    ],
)
def test_bad_training_qa_files_fail_with_file_and_line(
    tmp_path: Path, content: str, error: type[Exception], match: str
) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(content)
    with pytest.raises(error, match=match):
        build_sft_dataset(path, tokenizer=ChatMLTokenizer())


def test_missing_qa_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(QAFileError, match=r"nope\.jsonl does not exist"):
        build_sft_dataset(tmp_path / "nope.jsonl", tokenizer=ChatMLTokenizer())


def test_in_memory_items_need_reference_answers() -> None:
    items = [QAItem("a", "q?", reference_answer="r"), QAItem("b", "q2?")]
    with pytest.raises(DatasetError, match=r"without a reference_answer: \['b'\]"):
        build_sft_dataset(items, tokenizer=ChatMLTokenizer())


def test_tokenize_masks_the_prompt_and_truncates_the_middle() -> None:
    dataset = build_sft_dataset(tokenizer=ChatMLTokenizer(), context_fn=_context)
    tok = ChatMLTokenizer()
    row = tokenize_example(tok, dataset.train[0], max_seq_len=40)
    assert len(row["input_ids"]) == len(row["labels"]) <= 40
    n_completion = len(tok(dataset.train[0].completion)["input_ids"])
    assert row["labels"][-n_completion:] == row["input_ids"][-n_completion:]
    assert set(row["labels"][:-n_completion]) == {-100}


def test_collator_pads_and_masks_padding() -> None:
    collator = CompletionCollator(pad_token_id=0)
    collator.counting = True
    batch = collator(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert collator.tokens == 4


@pytest.mark.parametrize(
    "kwargs",
    [{"r": 0}, {"max_steps": 0}, {"max_seq_len": 8}, {"dropout": 1.0}, {"target_modules": ()}],
)
def test_bad_lora_params_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TrainingError, match="bad LoRA parameters"):
        LoraParams(**kwargs).validate()


def test_training_refuses_the_shared_cached_base() -> None:
    """The cached base serves answers: training must get a private copy (fresh=True)."""
    dataset = build_sft_dataset(tokenizer=ChatMLTokenizer(), context_fn=_context)
    source = ModelSource("/m", "m.gguf", "m.gguf", True)
    shared = LoadedModel(None, ChatMLTokenizer(), source, "cpu", 0.0, "/m", shared=True)
    with pytest.raises(TrainingError, match="fresh=True"):
        train_lora(shared, dataset, run=None)  # type: ignore[arg-type]  # refused before any use


def test_canonical_jsonl_is_one_sorted_object_per_line() -> None:
    dataset = build_sft_dataset(tokenizer=ChatMLTokenizer(), context_fn=_context)
    lines = dataset.canonical_jsonl().splitlines()
    assert len(lines) == 60
    rows = [json.loads(line) for line in lines]
    assert [r["split"] for r in rows] == ["train"] * 48 + ["validation"] * 12


def test_training_review_and_sensor_share_one_digest(tmp_path: Path) -> None:
    """The SFT dataset's ``source_digest``, the review step's training digest and the
    training-set sensor's cursor (``qa_file_digest``) are one number, for the file and for its
    items in memory: the golden set's digest rule (``qa.qa_digest``)."""
    dataset = build_sft_dataset(DEFAULT_TRAIN_QA, tokenizer=ChatMLTokenizer())
    in_memory = build_sft_dataset(load_qa_jsonl(DEFAULT_TRAIN_QA), tokenizer=ChatMLTokenizer())
    assert dataset.source_digest == train_digest_of(DEFAULT_TRAIN_QA)
    assert dataset.source_digest == qa_file_digest(DEFAULT_TRAIN_QA) == in_memory.source_digest
    assert train_digest_of(tmp_path / "none.jsonl") == ""
